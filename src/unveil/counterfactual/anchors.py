"""Anchors (Ribeiro, Singh & Guestrin, 2018, "Anchors: high-precision model-agnostic explanations").

An anchor of a row is a set of predicates it satisfies such that rows drawn from the data *with
those predicates held* get the row's class with probability (precision) at least ``threshold``.
Coverage is the share of data rows satisfying the predicates, counted on the data.

* Tables: one candidate predicate per column — the row's quantile bin of a numeric column
  (``0.1 < income <= 0.52``), its value of a categorical one (``gender == 1``). A sample from
  D(.|A) is a random data row whose anchored columns are redrawn from the data's values
  satisfying the predicate (a categorical value absent from the data keeps the row's own).
* Text: one candidate per word position; a sample keeps the anchored words and replaces every
  other word by ``mask_id`` with probability 1/2. Coverage is the share of ``data`` texts that
  contain every anchored word, or 2**-|A| (the perturbation distribution's) without data.

The search is the paper's: a beam of the ``beam`` best anchors of each size, chosen with the
KL-LUCB bandit (Kaufmann & Kalyanakrishnan, 2013) until the best and the rest are separated by
``epsilon`` at confidence 1 - ``delta``; then every beam member is sampled until its KL lower
bound clears the threshold or its upper bound falls below it, and the valid anchor of largest
coverage is returned. Samples of all arms in one round go through the model in one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.batching import BatchSize
from ..errors import InputError, OptionError
from ..surrogate.blackbox import Preprocess, as_table, with_preprocess, wrap
from .constraints import _column
from .decision import Decision, decide, score_rows
from .result import format_cell, format_value

__all__ = ["Anchor", "anchor", "anchor_text"]


@dataclass
class Anchor:
    """A rule that keeps the decision: predicates, precision, coverage."""

    predicates: list[str]
    features: list[str]
    label: int
    class_name: str
    precision: float
    coverage: float
    threshold: float
    n_samples: int
    #: whether the precision's lower confidence bound reached the threshold
    valid: bool = True
    #: tables: per predicate (column index, low, high, equality): ``x == low`` or ``low < x <= high``
    rules: list[tuple[int, float, float, bool]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def holds(self, rows: np.ndarray) -> np.ndarray:
        """Which table rows (M, F) meet every predicate (tables only)."""
        ok = np.ones(rows.shape[0], bool)
        for j, lo, hi, eq in self.rules:
            ok &= (rows[:, j] == lo) if eq else ((rows[:, j] > lo) & (rows[:, j] <= hi))
        return ok

    @property
    def sentence(self) -> str:
        """The rule in words for a reader who is not an engineer."""
        cond = " and ".join(self.predicates) if self.predicates else "whatever the other values"
        tail = "" if self.valid else f" (below the {self.threshold:.0%} asked: no rule reached it)"
        return (f"As long as {cond}, the model decides \u201c{self.class_name}\u201d in {self.precision:.0%} of "
                f"cases{tail}; {self.coverage:.1%} of the data meet these conditions.")

    def __str__(self) -> str:
        cond = " AND ".join(self.predicates) or "(always)"
        return f"IF {cond} THEN {self.class_name} (precision {self.precision:.3f}, coverage {self.coverage:.3f})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"predicates": self.predicates, "features": self.features, "label": self.label,
                "class_name": self.class_name, "precision": self.precision, "coverage": self.coverage,
                "threshold": self.threshold, "n_samples": self.n_samples, "valid": self.valid,
                "sentence": self.sentence}


# -- the bandit -----------------------------------------------------------------------------
def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = np.clip(p, 1e-12, 1 - 1e-12), np.clip(q, 1e-12, 1 - 1e-12)
    return np.asarray(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))


def _bound(p: np.ndarray, n: np.ndarray, beta: float, upper: bool) -> np.ndarray:
    """The largest (smallest) q with n * KL(p || q) <= beta, by bisection."""
    lo, hi = (p.copy(), np.ones_like(p)) if upper else (np.zeros_like(p), p.copy())
    level = beta / np.maximum(n, 1)
    for _ in range(30):
        mid = (lo + hi) / 2
        inside = _kl(p, mid) <= level
        if upper:
            lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
        else:
            lo, hi = np.where(inside, lo, mid), np.where(inside, mid, hi)
    return hi if not upper else lo


def _beta(n_arms: int, t: int, delta: float) -> float:
    return math.log(405.5 * n_arms * t ** 1.1 / delta)


Sampler = Callable[[list[tuple[int, ...]], int], np.ndarray]  # arms, n -> successes per arm


class _Arms:
    """Success counts of candidate anchors, sampled through one batched sampler."""

    def __init__(self, arms: list[tuple[int, ...]], sample: Sampler, batch: int) -> None:
        self.arms, self.sample, self.batch = arms, sample, batch
        self.n = np.zeros(len(arms))
        self.s = np.zeros(len(arms))
        self.t = 1
        self.pull(np.arange(len(arms)))

    def pull(self, which: np.ndarray) -> None:
        if which.size == 0:
            return
        self.s[which] += self.sample([self.arms[i] for i in which], self.batch)
        self.n[which] += self.batch
        self.t += 1

    @property
    def mean(self) -> np.ndarray:
        return self.s / np.maximum(self.n, 1)

    def bounds(self, delta: float) -> tuple[np.ndarray, np.ndarray]:
        beta = _beta(len(self.arms), self.t, delta)
        return _bound(self.mean, self.n, beta, False), _bound(self.mean, self.n, beta, True)


def _best(arms: _Arms, k: int, delta: float, epsilon: float, budget: int) -> np.ndarray:
    """KL-LUCB: indices of the ``k`` arms of highest precision."""
    if len(arms.arms) <= k:
        return np.arange(len(arms.arms))
    while True:
        order = np.argsort(-arms.mean, kind="stable")
        top, rest = order[:k], order[k:]
        lb, ub = arms.bounds(delta)
        ut, lt = rest[np.argmax(ub[rest])], top[np.argmin(lb[top])]
        if ub[ut] - lb[lt] <= epsilon or arms.n.sum() >= budget:
            return top
        arms.pull(np.array([ut, lt]))


def _search(n_preds: int, sample: Sampler, coverage: Callable[[tuple[int, ...]], float], *, threshold: float,
            beam: int, delta: float, epsilon: float, batch: int, max_size: int,
            budget: int) -> tuple[tuple[int, ...], float, float, int, bool]:
    """(predicates, precision, coverage, samples drawn, valid) of the anchor found."""
    empty = _Arms([()], sample, batch * 4)
    used = int(empty.n.sum())
    if empty.mean[0] >= threshold and empty.bounds(delta)[0][0] >= threshold:
        return (), float(empty.mean[0]), 1.0, used, True
    frontier: list[tuple[int, ...]] = [()]
    best_seen: tuple[tuple[int, ...], float] = ((), float(empty.mean[0]))
    for _ in range(min(max_size, n_preds)):
        cands = sorted({tuple(sorted({*a, j})) for a in frontier for j in range(n_preds) if j not in a})
        if not cands:
            break
        arms = _Arms(cands, sample, batch)
        top = _best(arms, beam, delta, epsilon, budget)
        # settle each beam member against the threshold
        for _ in range(200):
            lb, ub = arms.bounds(delta)
            open_ = top[(arms.mean[top] >= threshold) & (lb[top] < threshold) & (ub[top] >= threshold)]
            if open_.size == 0 or arms.n.sum() >= budget:
                break
            arms.pull(open_)
        used += int(arms.n.sum())
        lb, _ = arms.bounds(delta)
        ok = [i for i in top if arms.mean[i] >= threshold and lb[i] >= threshold]
        for i in top:
            if arms.mean[i] > best_seen[1]:
                best_seen = (cands[i], float(arms.mean[i]))
        if ok:
            cov = [coverage(cands[i]) for i in ok]
            j = int(np.lexsort((-arms.mean[ok], -np.asarray(cov)))[0])
            return cands[ok[j]], float(arms.mean[ok[j]]), float(cov[j]), used, True
        frontier = [cands[i] for i in top]
    return best_seen[0], best_seen[1], coverage(best_seen[0]), used, False


def _check(threshold: float, beam: int, delta: float, epsilon: float, batch: int) -> None:
    if not 0.0 < threshold <= 1.0:
        raise OptionError(f"threshold must be in (0, 1], got {threshold!r}")
    if not 0.0 < delta < 1.0 or not 0.0 < epsilon < 1.0:
        raise OptionError(f"delta and epsilon must be in (0, 1), got {delta!r} and {epsilon!r}")
    if beam < 1 or batch < 1:
        raise OptionError(f"beam and batch must be >= 1, got {beam!r} and {batch!r}")


# -- tables ---------------------------------------------------------------------------------
def _predicates(x: np.ndarray, data: np.ndarray, names: list[str], cat: set[int], n_bins: int,
                words: Mapping[str, Sequence[str]] | None = None) -> tuple[list[str], list[np.ndarray], list[tuple[int, float, float, bool]]]:
    """Per column: the predicate's text, the data values satisfying it, and its rule."""
    texts: list[str] = []
    pools: list[np.ndarray] = []
    rules: list[tuple[int, float, float, bool]] = []
    for j, name in enumerate(names):
        col = data[:, j]
        if j in cat:
            v = float(x[j])
            texts.append(f"{name} = {format_cell(name, v, words)}")
            rules.append((j, v, v, True))
        else:
            edges = np.unique(np.quantile(col, np.linspace(0, 1, n_bins + 1)[1:-1]))
            b = int(np.searchsorted(edges, x[j], side="left"))
            lo = -np.inf if b == 0 else float(edges[b - 1])
            hi = np.inf if b == edges.size else float(edges[b])
            if np.isinf(lo):
                texts.append(f"{name} <= {format_value(hi)}")
            elif np.isinf(hi):
                texts.append(f"{name} > {format_value(lo)}")
            else:
                texts.append(f"{format_value(lo)} < {name} <= {format_value(hi)}")
            rules.append((j, lo, hi, False))
        _, lo_, hi_, eq = rules[-1]
        sat = col[col == lo_] if eq else col[(col > lo_) & (col <= hi_)]
        pools.append(sat if sat.size else np.array([x[j]]))
    return texts, pools, rules


def anchor(
    model: Any, x: Any, *, data: Any, threshold: float = 0.95, feature_names: Sequence[str] | None = None,
    categorical: Sequence[str | int] = (), class_names: Sequence[str] | None = None,
    model_threshold: float | None = None, preprocess: Preprocess | None = None, n_bins: int = 4, beam: int = 2,
    delta: float = 0.1, epsilon: float = 0.15, batch: int = 64, max_size: int | None = 6,
    budget: int = 20000, seed: int = 0, batch_size: BatchSize = "auto",
    value_names: Mapping[str, Sequence[str]] | None = None,
) -> Anchor:
    """The anchor of one table row ``x`` (F,) or (1, F): predicates on its columns that keep the
    model's class with precision >= ``threshold`` on samples from ``data`` (D, F); coverage
    is the share of ``data`` rows meeting them. ``categorical`` columns are matched by value
    (columns of at most ``n_bins`` distinct whole numbers are too), the others by quantile bin.
    ``model_threshold`` thresholds a model with one score per row; ``budget`` caps samples per size;
    ``max_size`` caps the predicates (default 6: a longer rule explains nothing to a person;
    ``None`` for no cap). When no rule reaches the threshold, the most precise one seen is
    returned with ``valid=False``. ``value_names`` (``{column: [word of code 0, …]}``) makes
    coded text columns categorical and writes their predicates with words.
    """
    _check(threshold, beam, delta, epsilon, batch)
    m = wrap(model)
    Da, names = as_table(data, feature_names, name="data")
    xa = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64).reshape(-1)
    if xa.size != Da.shape[1]:
        raise InputError(f"x must be one row of {Da.shape[1]} values, got {xa.size}")
    cls_names = list(class_names) if class_names is not None else m.class_names
    if preprocess is not None:
        m = with_preprocess(m, preprocess)
    cat = {_column(c, names, "categorical") for c in [*categorical, *(value_names or {})]}
    cat |= {j for j in range(Da.shape[1]) if np.unique(Da[:, j]).size <= n_bins and np.all(Da[:, j] == np.round(Da[:, j]))}
    texts, pools, rules = _predicates(xa, Da, names, cat, n_bins, value_names)
    scores = decide(m, xa[None], batch_size=batch_size)
    dec = Decision.of(scores, model_threshold)
    label = int(dec.labels(scores)[0])
    rng = np.random.default_rng(seed)

    def sample(arms: list[tuple[int, ...]], n: int) -> np.ndarray:
        rows = Da[rng.integers(0, Da.shape[0], len(arms) * n)]
        for a, arm in enumerate(arms):
            for j in arm:
                rows[a * n:(a + 1) * n, j] = pools[j][rng.integers(0, pools[j].size, n)]
        hits = dec.labels(decide(m, rows, batch_size=batch_size)) == label
        return np.asarray(hits.reshape(len(arms), n).sum(axis=1), dtype=np.float64)

    def coverage(arm: tuple[int, ...]) -> float:
        return float(Anchor([], [], 0, "", 0.0, 0.0, 0.0, 0, rules=[rules[j] for j in arm]).holds(Da).mean())

    preds, prec, cov, used, valid = _search(len(names), sample, coverage, threshold=threshold, beam=beam, delta=delta,
                                            epsilon=epsilon, batch=batch, max_size=max_size or len(names),
                                            budget=budget)
    cname = cls_names[label] if cls_names and label < len(cls_names) else f"class {label}"
    return Anchor([texts[j] for j in preds], [names[j] for j in preds], label, cname, prec, cov, threshold, used,
                  valid, rules=[rules[j] for j in preds])


# -- text -----------------------------------------------------------------------------------
def anchor_text(
    model: Any, ids: Any, *, mask_id: int, tokens: Sequence[str] | None = None, data: Any = None,
    threshold: float = 0.95, class_names: Sequence[str] | None = None, model_threshold: float | None = None,
    pad_id: int | None = None, beam: int = 2, delta: float = 0.1, epsilon: float = 0.15, batch: int = 64,
    max_size: int | None = None, budget: int = 20000, seed: int = 0, batch_size: BatchSize = "auto",
) -> Anchor:
    """The anchor of one text given as token ids (T,) or (1, T), for a model of id batches (M, T):
    the words that, kept while every other word is replaced by ``mask_id`` with probability 1/2,
    keep the class with precision >= ``threshold``. ``tokens`` are the words' strings (default
    their ids); ``data`` (D, T) token ids for coverage; ``pad_id`` positions are never anchored."""
    _check(threshold, beam, delta, epsilon, batch)
    m = wrap(model)
    t = torch.as_tensor(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)).reshape(-1).long()
    if t.numel() == 0:
        raise InputError("ids is empty: pass one text as token ids (T,)")
    pos = [i for i in range(t.numel()) if pad_id is None or int(t[i]) != pad_id]
    words = [str(w) for w in tokens] if tokens is not None else [str(int(v)) for v in t]
    if len(words) != t.numel():
        raise InputError(f"tokens has {len(words)} strings for {t.numel()} ids")
    x = m.prepare(t[None])
    scores = score_rows(m, 1, lambda a, b: x, batch_size=1, key=("anchor_text", t.numel()))
    dec = Decision.of(np.asarray(scores), model_threshold)
    label = int(dec.labels(np.asarray(scores))[0])
    cls_names = list(class_names) if class_names is not None else m.class_names
    gen = torch.Generator().manual_seed(seed)
    posn = torch.tensor(pos, dtype=torch.long)

    def sample(arms: list[tuple[int, ...]], n: int) -> np.ndarray:
        keep = torch.rand(len(arms) * n, len(pos), generator=gen) < 0.5
        for a, arm in enumerate(arms):
            keep[a * n:(a + 1) * n, list(arm)] = True
        rows = x.repeat(len(arms) * n, 1)
        cols = rows[:, posn]
        rows[:, posn] = torch.where(keep.to(rows.device), cols, torch.full_like(cols, int(mask_id)))
        sc = score_rows(m, rows.shape[0], lambda a, b: rows[a:b], batch_size=batch_size,
                        key=("anchor_text", t.numel()))
        hits = dec.labels(np.asarray(sc)) == label
        return np.asarray(hits.reshape(len(arms), n).sum(axis=1), dtype=np.float64)

    data_ids = None if data is None else np.asarray(data.cpu() if isinstance(data, torch.Tensor) else data)

    def coverage(arm: tuple[int, ...]) -> float:
        if data_ids is None:
            return float(0.5 ** len(arm))
        ok = np.ones(data_ids.shape[0], bool)
        for i in arm:
            ok &= (data_ids == int(t[pos[i]])).any(axis=1)
        return float(ok.mean())

    preds, prec, cov, used, valid = _search(len(pos), sample, coverage, threshold=threshold, beam=beam, delta=delta,
                                            epsilon=epsilon, batch=batch, max_size=max_size or len(pos),
                                            budget=budget)
    cname = cls_names[label] if cls_names and label < len(cls_names) else f"class {label}"
    kept = [words[pos[i]] for i in preds]
    return Anchor([f"the text contains \u201c{w}\u201d" for w in kept], kept, label, cname, prec, cov, threshold,
                  used, valid, meta={"positions": [pos[i] for i in preds]})
