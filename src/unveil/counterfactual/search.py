"""``counterfactuals(model, X, ...)``: what would have to change for the decision to change.

The flow for every row at once: search (gradient restarts on a differentiable model, growing
spheres on any model, or both: spheres for the rows the gradient did not solve), move each valid
candidate back towards the input (:func:`._search.shrink`), reset needless changes when
``sparsity > 0`` (:func:`._search.sparsify`), verify exactly (:func:`._search.verify`), then pick
``n_counterfactuals`` diverse ones per row: the closest first, then each next one the closest
whose L1 distance to every one already picked is at least ``diversity`` times its own distance
to the input (the farthest from those picked when none is).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch

from ..core.batching import BatchSize, block_size, chunks
from ..errors import InputError, OptionError
from ..surrogate.blackbox import Preprocess, as_table, with_preprocess, wrap
from ._search import (
    Problem,
    gradient_search,
    shrink,
    sparse_variants,
    sparsify,
    sphere_search,
    verify,
)
from .constraints import Constraints, Space, as_constraints
from .decision import Decision, decide
from .result import Counterfactuals, check_k

__all__ = ["counterfactuals"]

Method = Literal["auto", "gradient", "spheres"]


def _scale(data: np.ndarray, scale: Any) -> np.ndarray:
    f = data.shape[1]
    if isinstance(scale, str):
        if scale == "std":
            s = data.std(axis=0) if data.shape[0] > 1 else np.ones(f)
        elif scale == "mad":
            s = 1.4826 * np.median(np.abs(data - np.median(data, axis=0)), axis=0)
        elif scale == "none":
            s = np.ones(f)
        else:
            raise OptionError(f"scale must be 'std', 'mad', 'none' or one positive number per column, got {scale!r}")
    else:
        s = np.asarray(scale, dtype=np.float64).reshape(-1)
        if s.shape != (f,) or not np.all(s > 0):
            raise OptionError(f"scale must hold {f} positive numbers, got {scale!r}")
    return np.where(s > 1e-12, s, 1.0)


def _diverse(cands: np.ndarray, x: np.ndarray, scale: np.ndarray, k: int, diversity: float,
             sparsity: float) -> list[int]:
    """Indices of up to ``k`` candidates: the cheapest first (L2 plus ``sparsity`` per column
    changed), then cheap ones far from those picked."""
    u = (cands - x) / scale
    d = np.abs(u).sum(axis=1)
    cost = np.sqrt((u * u).sum(axis=1)) + sparsity * (np.abs(u) > 1e-12).sum(axis=1)
    order = list(np.argsort(cost, kind="stable"))
    picked = [order.pop(0)]
    while order and len(picked) < k:
        gap = np.abs((cands[order][:, None, :] - cands[picked][None, :, :]) / scale).sum(axis=2).min(axis=1)
        if gap.max() <= 1e-12:
            break
        far = np.flatnonzero(gap >= diversity * d[order])
        pick = int(far[0]) if far.size else int(gap.argmax())  # order is by cost: far[0] is the cheapest such
        picked.append(order.pop(pick))
    return picked


class _Block:
    """The search and the steps after it for the rows ``a:b`` (global indices)."""

    def __init__(self, p: Problem, a: int, b: int, k: int, diversity: float, sparsity: float) -> None:
        self.p, self.a, self.b, self.k, self.diversity, self.sparsity = p, a, b, k, diversity, sparsity
        f = p.x0.shape[1]
        self.cand = np.zeros((0, f))
        self.owner = np.zeros(0, np.int64)
        self.nearest = p.x0[a:b].copy()  # per row: the sphere search's closest to flipping

    def search(self, labels: np.ndarray, want: np.ndarray, use_grad: bool, method: str, restarts: int,
               n_steps: int, lr: float, n_samples: int) -> int:
        """Candidates of every row of the block, post-processed; returns the rows the sphere
        search had to take."""
        p, a, b, f = self.p, self.a, self.b, self.p.x0.shape[1]
        Xa = p.x0
        pools: list[list[np.ndarray]] = [[] for _ in range(b - a)]
        todo = a + np.flatnonzero(labels[a:b] != want[a:b])
        if use_grad and todo.size:
            cand, found = gradient_search(p, todo, n_restarts=restarts, n_steps=n_steps, lr=lr)
            for r, c, hit in zip(todo, cand, found):
                pools[int(r) - a].extend(c[hit])
            todo = todo[:0] if method == "gradient" else todo[~found.any(axis=1)]
        if todo.size:
            cand, ok, close = sphere_search(p, todo, n_samples=n_samples, keep=max(16, 4 * self.k))
            for j, r in enumerate(todo):
                pools[int(r) - a].extend(cand[j][ok[j]])
            self.nearest[todo - a] = close
        for r in a + np.flatnonzero(labels[a:b] == want[a:b]):
            pools[int(r) - a].append(Xa[r].copy())  # already the desired class: the input itself
        owner = np.array([a + i for i in range(b - a) for _ in pools[i]], dtype=np.int64)
        cand = np.array([c for pool in pools for c in pool], dtype=np.float64).reshape(-1, f)
        if cand.shape[0] and self.sparsity > 0:
            # sparser variants of every candidate join the pool; resets need slack: before shrinking
            more, src = sparse_variants(p, cand, Xa[owner], want[owner])
            cand, owner = np.concatenate([cand, more]), np.concatenate([owner, owner[src]])
            cand = sparsify(p, cand, Xa[owner], want[owner])
        if cand.shape[0]:
            cand = shrink(p, cand, Xa[owner], want[owner])
        self.margin, self.viol, self.sc = verify(p, cand, Xa[owner], want[owner])
        self.cand, self.owner = cand, owner
        return int(todo.size)

    def pick(self, rows: np.ndarray, scores: np.ndarray, valid: np.ndarray, vcount: np.ndarray) -> None:
        """Up to ``k`` diverse valid candidates per row, written into the global arrays."""
        p, cand = self.p, self.cand
        ok = (self.margin > 0) & ~self.viol.any(axis=1)
        order = np.argsort(self.owner, kind="stable")
        bounds = np.searchsorted(self.owner[order], np.arange(self.a, self.b + 1))
        for i in range(self.a, self.b):
            mine = order[bounds[i - self.a]:bounds[i - self.a + 1]]
            mine = mine[ok[mine]]
            if mine.size == 0:
                continue
            # drop exact duplicates before choosing
            _, first = np.unique(np.round(cand[mine] / p.scale, 9), axis=0, return_index=True)
            mine = mine[np.sort(first)]
            pick = mine[_diverse(cand[mine], p.x0[i], p.scale, self.k, self.diversity, self.sparsity)]
            rows[i, :pick.size] = cand[pick]
            scores[i, :pick.size] = np.asarray(self.sc[pick]).reshape(pick.size, -1)
            valid[i, :pick.size] = True
            vcount[i, :pick.size] = self.viol[pick].sum(axis=1)

    def closest(self, valid: np.ndarray, close_rows: np.ndarray, close_scores: np.ndarray,
                close_viol: np.ndarray) -> None:
        """The closest candidate of each row of the block without a valid one."""
        p = self.p
        miss = self.a + np.flatnonzero(~valid[self.a:self.b].any(axis=1))
        if miss.size == 0:
            return
        rank = self.margin - 1e9 * self.viol.sum(axis=1)  # fewest violations, then nearest to flipping
        nearest = self.nearest
        for r in miss:
            mine = np.flatnonzero(self.owner == r)
            if mine.size:  # a searched candidate that failed verification beats the sphere fallback
                nearest[r - self.a] = self.cand[mine[np.argmax(rank[mine])]]
        cr = p.space.snap(nearest[miss - self.a], p.x0[miss])
        _, cv, cs = verify(p, cr, p.x0[miss], p.desired[miss])
        close_rows[miss], close_viol[miss] = cr, cv.sum(axis=1)
        close_scores[miss] = np.asarray(cs).reshape(miss.size, -1)


def _neighbours(p: Problem, rows: np.ndarray, data_labels: np.ndarray, desired: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """(plausibility, yNN) per row: mean scaled distance to the ``k`` nearest data rows and the
    share of them the model gives the desired class."""
    if rows.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    a = torch.from_numpy(rows / p.scale)
    b = torch.from_numpy(p.data / p.scale)
    k = min(k, b.shape[0])
    dist, idx = torch.cdist(a, b).topk(k, dim=1, largest=False)
    return dist.mean(dim=1).numpy(), (data_labels[idx.numpy()] == desired[:, None]).mean(axis=1)


def counterfactuals(
    model: Any, X: Any, *, data: Any = None, desired: int | str | None = None, threshold: float | None = None,
    constraints: Constraints | dict[str, Any] | None = None, n_counterfactuals: int = 1,
    method: Method = "auto", preprocess: Preprocess | None = None, feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None, sparsity: float = 0.1, plausibility: float = 0.0,
    diversity: float = 0.3, scale: Any = "std", n_restarts: int | None = None, n_steps: int = 150,
    lr: float = 0.1, n_samples: int = 256, k_neighbors: int = 5, seed: int = 0, batch_size: BatchSize = "auto",
    value_names: Mapping[str, Sequence[str]] | None = None,
) -> Counterfactuals:
    """Counterfactuals of the rows ``X``: the nearest rows, within hard constraints, that the
    model gives another class.

    Parameters
    ----------
    model : classifier — torch module, scikit-learn estimator or callable
    X : rows (N, F) to explain, in the table's units (array, tensor or DataFrame)
    data : rows the model knows (D, F): each column's scale, the categorical values allowed by
        default, and the neighbours of plausibility and yNN (default ``X``)
    desired : the class to reach (index or class name); default the other class of two
    threshold : for one score per row, the class is ``score > threshold`` (default 0.5)
    constraints : :class:`~unveil.counterfactual.Constraints` or a dict of its fields
    n_counterfactuals : how many diverse counterfactuals per row (default 1)
    method : ``"gradient"`` (differentiable models), ``"spheres"`` (any model), ``"auto"``
        (gradient where possible, then spheres for the rows left)
    preprocess : function of the table's rows -> the model's inputs (search in the table's units;
        the model is then a black box and ``"spheres"`` is used)
    sparsity, plausibility : weights of the L1 and nearest-data-row terms (gradient);
        ``sparsity > 0`` also adds sparser variants of each candidate (its change kept on its
        1, 2, 3, 5, 8 largest columns, stretched until valid), resets needless changes, and
        ranks candidates by L2 + ``sparsity`` per column changed. Proximity (L2) has weight 1
    diversity : each further counterfactual is at least this fraction of its distance to the
        input away (L1) from those already picked, where possible
    scale : unit of each column in distances: ``"std"`` of ``data`` (default), ``"mad"``,
        ``"none"`` or one number per column
    n_restarts, n_steps, lr : gradient search budget (restarts default ``max(4, 2 * K)``)
    n_samples : candidates per row per sphere layer
    k_neighbors : neighbours for plausibility and yNN
    value_names : the words of coded text columns, ``{column: [word of code 0, …]}`` (as
        :class:`~unveil.frontends.tables.DataTable` keeps them): such columns are categorical
        (values seen in ``data``) and sentences and tables show their words

    Returns
    -------
    Counterfactuals
        ``.rows``, ``.valid``, ``.scores``, ``.metrics``, ``.recourse(i)``, ``.to_pandas()``.
    """
    t0 = time.perf_counter()
    k = check_k(n_counterfactuals)
    if method not in ("auto", "gradient", "spheres"):
        raise OptionError(f"method must be 'auto', 'gradient' or 'spheres', got {method!r}")
    for name, v in (("sparsity", sparsity), ("plausibility", plausibility), ("diversity", diversity)):
        if not isinstance(v, (int, float)) or v < 0:
            raise OptionError(f"{name} must be a number >= 0, got {v!r}")
    m = wrap(model)
    Xa, names = as_table(X, feature_names)
    Da = Xa if data is None else as_table(data, names, name="data")[0]
    if Da.shape[1] != Xa.shape[1]:
        raise InputError(f"data has {Da.shape[1]} columns, X has {Xa.shape[1]}; pass rows of the same table")
    cls_names = list(class_names) if class_names is not None else m.class_names
    if preprocess is not None:
        m = with_preprocess(m, preprocess)
    words = _words(value_names, names)
    cons = _with_categorical(as_constraints(constraints), words)
    space = Space.build(cons, names, Da)
    x_scores = decide(m, Xa, batch_size=batch_size)
    dec = Decision.of(x_scores, threshold)
    labels = dec.labels(x_scores)
    want = dec.desired_of(labels, desired, cls_names)
    p = Problem(m, space, dec, _scale(Da, scale), Xa, want, Da, batch_size, float(sparsity), float(plausibility), seed)
    use_grad = method == "gradient" or (method == "auto" and m.differentiable and preprocess is None)
    if method == "gradient" and not m.differentiable:
        m.require_gradients("counterfactuals(method='gradient')")
    n, f = Xa.shape
    data_labels = dec.labels(decide(m, Da, batch_size=batch_size))
    n_scores = 1 if x_scores.ndim == 1 else x_scores.shape[1]
    rows = np.full((n, k, f), np.nan)
    scores = np.full((n, k, n_scores), np.nan)
    valid = np.zeros((n, k), bool)
    vcount = np.zeros((n, k), np.int64)
    close_rows = np.full((n, f), np.nan)
    close_scores = np.full((n, n_scores), np.nan)
    close_viol = np.zeros(n, np.int64)
    restarts = n_restarts or max(4, 2 * k)
    # rows in blocks: every buffer of the search and of the steps after it (sphere layers,
    # restarts, line searches, sparser variants) is a few hundred candidates per row, so a
    # block's memory is bounded by the budget whatever the number of rows
    per_row = 8 * f * (6 * n_samples + 12 * (restarts + 5) * 12 + 4 * k) + 4096
    block = block_size(per_row, n, what="the search of one row", share=0.25)
    sphered = 0
    for a, b in chunks(n, block):
        blk = _Block(p, a, b, k, diversity, sparsity)
        sphered += blk.search(labels, want, use_grad, method, restarts, n_steps, lr, n_samples)
        blk.pick(rows, scores, valid, vcount)
        blk.closest(valid, close_rows, close_scores, close_viol)
    flat = rows.reshape(-1, f)
    have = valid.reshape(-1)
    d = (flat - np.repeat(Xa, k, axis=0)) / p.scale
    l0 = np.where(have, (np.abs(d) > 1e-12).sum(axis=1), np.nan).reshape(n, k)
    l1 = np.where(have, np.abs(d).sum(axis=1), np.nan).reshape(n, k)
    l2 = np.where(have, np.sqrt((d * d).sum(axis=1)), np.nan).reshape(n, k)
    plaus, ynn = np.full(n * k, np.nan), np.full(n * k, np.nan)
    if have.any():
        plaus[have], ynn[have] = _neighbours(p, flat[have], data_labels, np.repeat(want, k)[have], k_neighbors)
    params = {"n_counterfactuals": k, "sparsity": sparsity, "plausibility": plausibility, "diversity": diversity,
              "n_steps": n_steps, "lr": lr, "n_samples": n_samples, "seed": seed, "threshold": dec.threshold}
    used = "gradient" if use_grad else "spheres"
    if use_grad and sphered:
        used = "gradient+spheres"
    return Counterfactuals(
        names, None if cls_names is None else [str(c) for c in cls_names], Xa, labels, want, rows, valid, scores,
        np.asarray(x_scores).reshape(n, -1), close_rows, close_scores, l0, l1, l2,
        plaus.reshape(n, k), ynn.reshape(n, k), vcount, p.scale, used,
        cons.describe(), params, time.perf_counter() - t0, int(m.n_evals),
        closest_violations=close_viol, value_names=words)


def _words(value_names: Mapping[str, Sequence[str]] | None, names: list[str]) -> dict[str, list[str]]:
    """``value_names`` checked against the columns: ``{column: [word, …]}``."""
    out: dict[str, list[str]] = {}
    for col, words in (value_names or {}).items():
        if str(col) not in names:
            raise OptionError(f"value_names: no column named {col!r}; the columns are {names}")
        if isinstance(words, str) or not all(isinstance(w, str) for w in words):
            raise OptionError(f"value_names[{col!r}] must be a list of words (the word of code 0, 1, …), "
                              f"got {words!r}")
        out[str(col)] = list(words)
    return out


def _with_categorical(cons: Constraints, words: dict[str, list[str]]) -> Constraints:
    """``cons`` with every coded text column categorical (values seen in the data) unless it
    already is."""
    cats = cons.categorical
    if isinstance(cats, Mapping):
        have = {str(c) for c in cats}
        more: dict[str | int, Sequence[float] | None] = {c: None for c in words if c not in have}
        return replace(cons, categorical={**cats, **more}) if more else cons
    have = {str(c) for c in cats}
    more_cols = [c for c in words if c not in have]
    return replace(cons, categorical=[*cats, *more_cols]) if more_cols else cons
