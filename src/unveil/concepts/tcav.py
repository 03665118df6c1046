"""Testing with concept activation vectors (TCAV; Kim et al., 2018, "Interpretability beyond
feature attribution").

A *concept* is a set of examples (images with stripes, table rows of one kind, token-id spans).
At a layer, a linear classifier separates the concept's activations from those of a random set
drawn from a pool; the normal of its boundary, pointing toward the concept, is the *concept
activation vector* (CAV). The TCAV score of a class is the fraction of the class's inputs whose
class score rises when their activation moves along the CAV (a positive directional
derivative). One CAV is noise; so the experiment is repeated against ``n_random`` random sets,
and compared with *random concepts* (a second random set against each random set). A concept is
significant when it passes two tests (an intersection-union test, ``p = max`` of the two): its
scores differ from the random concepts' (two-sided t-test over the runs, TCAV's own test), and
its examples separate from the random sets better than random concepts' do (a one-sided t
prediction test on the classifiers' balanced log-loss). The second matters: a fixed set of
random examples sways a class consistently by chance of its composition, so on the first test
alone it is "significant" more often than not. p-values are Bonferroni-corrected across the
concepts tested together; a fresh random concept per run is tested the same way as a control.

What makes the numbers reproducible: every example set (and the random pool) is put in a
canonical order (by the bytes of each example) before anything is drawn or fitted; random run
``i`` draws from a generator seeded by ``(seed, i)``; and the classifier is an L2-regularised
logistic regression solved to its unique optimum (:mod:`unveil.concepts._linear`), not
stochastic gradient descent. Shuffling the example sets, or the concepts, changes nothing.

How many random runs: given (``n_random=30``), or ``"auto"``: a pilot of 10 random-concept runs
estimates the spread of scores, and the number is the smallest (10 to 100) whose t-test has 80 %
power to detect a difference of ``min_effect`` in mean score at the Bonferroni level. The
number used and its power are reported.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..core.hooks import get_submodule, layer_name, model_guard
from ..core.model import Model, known_names
from ..errors import InputError, ModelError, OptionError, TargetError
from ..zoo.fitting import one_thread
from . import _stats
from ._layer import LayerProbe, as_examples
from ._linear import fit_logistic
from .result import TCAVResult

__all__ = ["CAV", "MIN_EXAMPLES", "MIN_INPUTS", "concept_activation_vectors", "tcav"]

#: Fewest examples per concept (and per random set) a CAV is fitted on.
MIN_EXAMPLES = 10
#: Fewest class inputs a TCAV score is computed over.
MIN_INPUTS = 5
PILOT_RUNS = 10
MAX_RUNS = 100


@dataclass
class CAV:
    """The concept activation vectors of one concept at one layer, one per random run.

    Attributes
    ----------
    concept, layer : str
        The concept's name and the layer's dotted name.
    vectors : ndarray
        ``(R, D)`` unit vectors in the pooled activation space, pointing toward the concept.
    weights, intercepts : ndarray
        ``(R, D)`` and ``(R,)``: each classifier's decision function ``a · w + b`` on pooled
        activations ``a`` (positive on the concept's side).
    accuracy : ndarray
        ``(R,)`` balanced training accuracy of each classifier (near 0.5: the concept is not
        linearly separable from random examples at this layer).
    pool : str
        How activations were pooled per example (``"flatten"`` or ``"mean"``).
    """

    concept: str
    layer: str
    vectors: np.ndarray
    weights: np.ndarray
    intercepts: np.ndarray
    accuracy: np.ndarray
    pool: str
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def direction(self) -> np.ndarray:
        """The mean of the run vectors, normalised: one direction for the concept."""
        m = self.vectors.mean(axis=0)
        n = float(np.linalg.norm(m))
        return np.asarray(m / n if n > 0 else m)

    def _probe(self, model: Any) -> LayerProbe:
        module = _module(model if model is not None else self.model)
        return LayerProbe(module, get_submodule(module, self.layer), self.pool, 128)

    def presence(self, inputs: Any, *, model: Any = None) -> np.ndarray:
        """How strongly each input shows the concept: the classifiers' mean probability
        ``sigmoid(a · w + b)`` over the runs, ``(N,)`` in [0, 1]."""
        module = _module(model if model is not None else self.model)
        with model_guard(module):
            a = self._probe(module).activations(as_examples(inputs, "inputs")).numpy()
        f = a @ self.weights.T + self.intercepts
        return np.asarray((1.0 / (1.0 + np.exp(-f))).mean(axis=1))

    def directional_derivatives(self, inputs: Any, target: int | str, *,
                                model: Any = None) -> np.ndarray:
        """``(N, R)``: the derivative of the target score along each run's unit CAV."""
        module = _module(model if model is not None else self.model)
        t = _target(module, target)
        with model_guard(module):
            g, _ = self._probe(module).gradients(_batch(inputs, "inputs"), t)
        return np.asarray(g.numpy() @ self.vectors.T)

    def score(self, inputs: Any, target: int | str, *, model: Any = None) -> np.ndarray:
        """``(R,)`` TCAV scores of new inputs: per run, the fraction with a positive
        directional derivative of the target score."""
        dd = self.directional_derivatives(inputs, target, model=model)
        return np.asarray((dd > 0).mean(axis=0))


# --------------------------------------------------------------------------- helpers


def _module(model: Any) -> nn.Module:
    if isinstance(model, Model):
        model = model.module
    if not isinstance(model, nn.Module):
        raise ModelError("TCAV needs a torch.nn.Module (it reads and differentiates a layer); got "
                         f"{type(model).__name__}")
    return model


def _target(module: nn.Module, target: Any) -> int:
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target.item())
    if isinstance(target, str):
        names = known_names(module, "class")
        if names is None or target not in names:
            raise TargetError(f"target {target!r} is not a class name of this model "
                              f"({', '.join(names) if names else 'it names no classes'}); "
                              "pass a class index")
        return names.index(target)
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
        raise TargetError(f"target must be one class index (an int) or a class name; got "
                          f"{target!r}")
    if target < 0:
        raise TargetError(f"target {target} is out of range: class indices start at 0")
    return int(target)


def _batch(x: Any, name: str) -> torch.Tensor:
    t = as_examples(x, name)
    if isinstance(t, list):
        raise InputError(f"{name} must be one batch of equal-shaped inputs (pad token ids to one "
                         "length)")
    return t


def _key(example: torch.Tensor) -> bytes:
    t = example.detach().cpu().contiguous()
    return hashlib.blake2b(str(t.dtype).encode() + str(tuple(t.shape)).encode()
                           + t.numpy().tobytes(), digest_size=16).digest()


def canonical_order(examples: torch.Tensor | list[torch.Tensor]) -> np.ndarray:
    """A permutation putting the examples in an order that depends on their content only."""
    keys = [_key(e) for e in examples]
    return np.asarray(sorted(range(len(keys)), key=lambda i: keys[i]), dtype=np.int64)


def _take(examples: torch.Tensor | list[torch.Tensor], order: np.ndarray
          ) -> torch.Tensor | list[torch.Tensor]:
    if isinstance(examples, list):
        return [examples[int(i)] for i in order]
    return examples[torch.as_tensor(order)]


def _draw(n_pool: int, size: int, seed: int, run: int) -> tuple[np.ndarray, ...]:
    """Random run ``run``: three disjoint sets of ``size`` pool rows — the random set, the
    random concept tested against it (the null), and a second random concept (the control)."""
    rng = np.random.default_rng([seed, run])
    perm = rng.permutation(n_pool)
    return tuple(np.sort(perm[k * size:(k + 1) * size]) for k in range(3))


def _resolve_pool(pool: str, inputs: Any) -> str:
    if pool == "auto":
        integer = not isinstance(inputs, list) and not torch.as_tensor(inputs).is_floating_point()
        return "mean" if integer or isinstance(inputs, list) else "flatten"
    if pool not in ("flatten", "mean"):
        raise OptionError(f"pool must be 'auto', 'flatten' or 'mean'; got {pool!r}")
    return pool


def _sets(concepts: Mapping[str, Any]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    if not isinstance(concepts, Mapping) or not concepts:
        raise InputError("concepts must be a non-empty dict {name: examples}, e.g. "
                         "{'stripes': images_with_stripes}")
    out = {}
    for name, x in concepts.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"concept names must be non-empty strings; got {name!r}")
        ex = as_examples(x, f"concept {name!r}")
        if len(ex) < MIN_EXAMPLES:
            raise InputError(f"concept {name!r} has {len(ex)} examples; a CAV needs at least "
                             f"{MIN_EXAMPLES} (TCAV's authors use 50 or more). Add examples")
        out[name] = _take(ex, canonical_order(ex))
    return out


@dataclass
class _Fitted:
    """What one batch of classifiers gives: per problem the unit-CAV derivatives of the inputs,
    the raw-space weights, intercepts, balanced accuracy and balanced log-loss (how well the
    concept separates from the random set: lower is better separated)."""

    dd: np.ndarray
    weights: np.ndarray | None
    intercepts: np.ndarray
    accuracy: np.ndarray
    loss: np.ndarray


class _Experiment:
    """Activations of every example (scaled, with their Gram matrix) and of the inputs'
    gradients, and the fitting of any concept-vs-random problem on them."""

    def __init__(self, acts: torch.Tensor, grads: torch.Tensor, l2: float) -> None:
        sq = (acts * acts).sum(1).mean()
        self.scale = float(sq.sqrt()) if float(sq) > 0 else 1.0
        self.A = acts / self.scale
        self.G = self.A @ self.A.T
        self.H = grads @ self.A.T
        self.l2 = l2

    def fit(self, pos: list[np.ndarray], neg: list[np.ndarray], *, vectors: bool) -> _Fitted:
        idx = torch.as_tensor(np.stack([np.concatenate([p, q]) for p, q in zip(pos, neg)]))
        y = torch.cat([torch.ones(idx.shape[0], len(pos[0])),
                       -torch.ones(idx.shape[0], len(neg[0]))], dim=1)
        dd, ws, bs, accs, losses = [], [], [], [], []
        for start in range(0, idx.shape[0], 32):
            rows = idx[start:start + 32]
            gram = self.G[rows[:, :, None], rows[:, None, :]]
            alpha, b, f = fit_logistic(gram, y[start:start + 32], l2=self.l2)
            norm = torch.einsum("ki,kij,kj->k", alpha, gram, alpha).clamp_min(1e-300).sqrt()
            dd.append(torch.einsum("nki,ki->kn", self.H[:, rows], alpha) / norm[:, None])
            yy = y[start:start + 32]
            correct = ((f > 0) == (yy > 0)).double()
            nll = torch.nn.functional.softplus(-yy.double() * f)
            losses.append(0.5 * ((nll * (yy > 0)).sum(1) / (yy > 0).sum(1)
                                 + (nll * (yy < 0)).sum(1) / (yy < 0).sum(1)))
            accs.append(0.5 * ((correct * (yy > 0)).sum(1) / (yy > 0).sum(1)
                               + (correct * (yy < 0)).sum(1) / (yy < 0).sum(1)))
            bs.append(b)
            if vectors:  # w = Xᵀ alpha, as a (k, M) scatter of alpha times all activations
                full = torch.zeros(rows.shape[0], self.A.shape[0], dtype=torch.float64)
                full.scatter_add_(1, rows, alpha)
                ws.append(full @ self.A / self.scale)
        return _Fitted(torch.cat(dd).numpy(), torch.cat(ws).numpy() if vectors else None,
                       torch.cat(bs).numpy(), torch.cat(accs).numpy(), torch.cat(losses).numpy())


# --------------------------------------------------------------------------- the entry points


def tcav(
    model: Any,
    concepts: Mapping[str, Any],
    inputs: Any,
    target: int | str | torch.Tensor,
    layer: str | nn.Module,
    random_pool: Any = None,
    *,
    n_random: int | Literal["auto"] = "auto",
    random_size: int | None = None,
    pool: Literal["auto", "flatten", "mean"] = "auto",
    alpha: float = 0.05,
    min_effect: float = 0.2,
    power: float = 0.8,
    l2: float = 1e-2,
    seed: int = 0,
    batch_size: int = 128,
) -> TCAVResult:
    """TCAV scores of several concepts for one class at one layer, each tested against random
    concepts.

    Parameters
    ----------
    model : torch.nn.Module or unveil.Model
        A classifier returning ``(N, K)`` scores (a language model's last position is used).
    concepts : dict of str to examples
        Each concept's examples, shaped like model inputs: ``(n, C, H, W)`` images, ``(n, F)``
        rows, ``(n, T)`` token ids, or a list of token-id spans of varying length. At least
        :data:`MIN_EXAMPLES` each.
    inputs : tensor or array
        Inputs of the class under study (``target``), at least :data:`MIN_INPUTS`.
    target : int or str
        The class (index, or name when the model names its classes).
    layer : str or nn.Module
        Dotted layer name (as in ``model.named_modules()``) or the module itself.
    random_pool : tensor or array
        Examples random sets are drawn from (e.g. data of all classes); at least
        ``3 * random_size`` of them (three disjoint sets are drawn per run).
    n_random : int or "auto"
        Random runs (each: one random set, and one random concept tested against it).
        ``"auto"`` chooses 10 to 100 for ``power`` (see the module's notes).
    random_size : int, optional
        Examples per random set; default the largest concept's size, capped at half the pool.
    pool : {"auto", "flatten", "mean"}
        Per-example pooling of the layer's output: ``"flatten"`` keeps every unit; ``"mean"``
        averages over positions (needed for spans of varying length). ``"auto"``: ``"mean"`` for
        token ids, else ``"flatten"``.
    alpha : float
        Level of the Bonferroni-corrected test (``significant`` in the result).
    min_effect, power : float
        For ``n_random="auto"``: the difference in mean TCAV score to detect, and the power.
    l2 : float
        L2 penalty of the CAV classifiers (on activations scaled to unit mean square norm).
    seed : int
        Seeds the random draws; the result depends on nothing else.
    batch_size : int
        Examples per forward pass.

    Returns
    -------
    TCAVResult
        Scores, p-values (raw and corrected), the random-concept scores, the CAVs.

    Raises
    ------
    LayerNotFoundError
        For an unknown layer (the message lists the closest names).
    InputError
        For too few examples, inputs or pool rows, or examples the model rejects.
    TargetError
        For a target outside the model's classes.
    """
    t0 = time.perf_counter()
    module = _module(model)
    tgt = _target(module, target)
    if not 0 < alpha < 1 or not 0 < power < 1 or not 0 < min_effect <= 1:
        raise OptionError(f"alpha and power must be in (0, 1) and min_effect in (0, 1]; got "
                          f"alpha={alpha}, power={power}, min_effect={min_effect}")
    if l2 <= 0:
        raise OptionError(f"l2 must be positive; got {l2}")
    if n_random != "auto" and (isinstance(n_random, bool) or not isinstance(n_random, int)
                               or n_random < 2):
        raise OptionError(f"n_random must be 'auto' or an int >= 2; got {n_random!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive int; got {batch_size!r}")
    sets = _sets(concepts)
    x = _batch(inputs, "inputs")
    x = x[torch.as_tensor(canonical_order(x))]  # the scores do not depend on the inputs' order
    if random_pool is None:
        raise InputError("random_pool is missing: pass examples to draw random sets from, e.g. "
                         "a few hundred rows of the training data of every class")
    if len(x) < MIN_INPUTS:
        raise InputError(f"inputs has {len(x)} rows; a TCAV score needs at least {MIN_INPUTS} "
                         "inputs of the class")
    pool_x = as_examples(random_pool, "random_pool")
    pool_x = _take(pool_x, canonical_order(pool_x))
    size = random_size if random_size is not None else max(len(s) for s in sets.values())
    size = min(size, len(pool_x) // 3)
    if size < MIN_EXAMPLES:
        raise InputError(f"random_pool has {len(pool_x)} examples; random sets need at least "
                         f"{MIN_EXAMPLES} each and three are drawn per run, so pass at least "
                         f"{3 * MIN_EXAMPLES}")
    pooling = _resolve_pool(pool, inputs)
    name = layer_name(module, layer)
    lay = get_submodule(module, name)
    n_max = MAX_RUNS if n_random == "auto" else int(n_random)
    draws = [_draw(len(pool_x), size, seed, i) for i in range(n_max)]
    used = np.unique(np.concatenate([np.concatenate(d) for d in draws]))
    where = np.full(len(pool_x), -1, dtype=np.int64)
    probe = LayerProbe(module, lay, pooling, batch_size)
    with model_guard(module):
        grads, logits = probe.gradients(x, tgt)
        acts, offsets, at = [], {}, 0
        for cname in sorted(sets):  # a layout independent of the concepts' order
            acts.append(probe.activations(sets[cname]))
            offsets[cname] = np.arange(at, at + len(acts[-1]))
            at += len(acts[-1])
        where[used] = np.arange(at, at + len(used))
        acts.append(probe.activations(_take(pool_x, used)))
    t_acts = time.perf_counter()
    exp = _Experiment(torch.cat(acts), grads, l2)

    def random_runs(lo: int, hi: int, which: int = 1) -> _Fitted:
        with one_thread():
            return exp.fit([where[draws[i][which]] for i in range(lo, hi)],
                           [where[draws[i][0]] for i in range(lo, hi)], vectors=False)

    m = len(sets)
    level = alpha / m
    if n_random == "auto":
        pilot = random_runs(0, PILOT_RUNS)
        sd = max(float(np.std((pilot.dd > 0).mean(1), ddof=1)), 0.02)
        n = _stats.runs_for_power(min_effect, sd, level, power, PILOT_RUNS, MAX_RUNS)
        rest = random_runs(PILOT_RUNS, n) if n > PILOT_RUNS else None
        rnd_dd = pilot.dd if rest is None else np.concatenate([pilot.dd, rest.dd])
        rnd_acc = pilot.accuracy if rest is None else np.concatenate([pilot.accuracy, rest.accuracy])
        rnd_loss = pilot.loss if rest is None else np.concatenate([pilot.loss, rest.loss])
    else:
        n = int(n_random)
        fitted = random_runs(0, n)
        rnd_dd, rnd_acc, rnd_loss = fitted.dd, fitted.accuracy, fitted.loss
    random_scores = (rnd_dd > 0).mean(1)
    control = random_runs(0, n, which=2)
    control_scores = (control.dd > 0).mean(1)

    def test(scores: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
        return (_stats.two_sided_p(scores, random_scores),
                _stats.outlier_p(float(loss.mean()), rnd_loss))

    control_tests = test(control_scores, control.loss)
    run_scores, magnitudes, cavs, pvals, p_scores, p_sep, sep = [], [], {}, [], [], [], []
    for cname in sets:
        off = offsets[cname]
        with one_thread():
            f = exp.fit([off] * n, [where[draws[i][0]] for i in range(n)], vectors=True)
        s = (f.dd > 0).mean(1)
        run_scores.append(s)
        pos = np.clip(f.dd, 0, None).sum(1)
        magnitudes.append(float(np.mean(pos / np.maximum(np.abs(f.dd).sum(1), 1e-300))))
        ps, pl = test(s, f.loss)
        p_scores.append(ps)
        p_sep.append(pl)
        pvals.append(max(ps, pl))
        sep.append(float(f.loss.mean()))
        assert f.weights is not None
        norms = np.linalg.norm(f.weights, axis=1, keepdims=True)
        cavs[cname] = CAV(cname, name, f.weights / np.maximum(norms, 1e-300), f.weights,
                          f.intercepts, f.accuracy, pooling, model=module)
    sd_r = max(float(np.std(random_scores, ddof=1)), 0.02)
    p = np.asarray(pvals)
    corrected = _stats.bonferroni(p)
    names = known_names(module, "class")
    predicted = logits.argmax(1)
    return TCAVResult(
        concepts=list(sets),
        scores=np.asarray([r.mean() for r in run_scores]),
        run_scores=np.stack(run_scores),
        random_scores=random_scores,
        control_scores=control_scores,
        control_p=max(control_tests),
        p_values=p,
        p_corrected=corrected,
        p_scores=np.asarray(p_scores),
        p_separation=np.asarray(p_sep),
        separation=np.asarray(sep),
        random_separation=float(rnd_loss.mean()),
        magnitudes=np.asarray(magnitudes),
        cav_accuracy=np.asarray([c.accuracy.mean() for c in cavs.values()]),
        random_accuracy=float(rnd_acc.mean()),
        layer=name,
        target=tgt,
        target_name=names[tgt] if names is not None and tgt < len(names) else str(tgt),
        n_random=n,
        n_random_mode="auto" if n_random == "auto" else "given",
        power=_stats.power(n, min_effect, sd_r, level),
        min_effect=min_effect,
        alpha=alpha,
        n_inputs=len(x),
        n_examples={c: len(s) for c, s in sets.items()},
        random_size=size,
        pool=pooling,
        seed=seed,
        cavs=cavs,
        params={"l2": l2, "power_target": power, "pool_size": len(pool_x),
                "inputs_predicted_as_target": float((predicted == tgt).double().mean())},
        timings={"activations_s": round(t_acts - t0, 4),
                 "total_s": round(time.perf_counter() - t0, 4)},
    )


def concept_activation_vectors(
    model: Any,
    concepts: Mapping[str, Any],
    layer: str | nn.Module,
    random_pool: Any,
    *,
    n_random: int = 10,
    random_size: int | None = None,
    pool: Literal["auto", "flatten", "mean"] = "auto",
    l2: float = 1e-2,
    seed: int = 0,
    batch_size: int = 128,
) -> dict[str, CAV]:
    """The CAVs of several concepts at a layer (``n_random`` runs each), to reuse on new inputs
    (:meth:`CAV.presence`, :meth:`CAV.score`). Same draws, order-independence and classifier as
    :func:`tcav`."""
    module = _module(model)
    sets = _sets(concepts)
    pool_x = as_examples(random_pool, "random_pool")
    pool_x = _take(pool_x, canonical_order(pool_x))
    size = min(random_size or max(len(s) for s in sets.values()), len(pool_x) // 3)
    if size < MIN_EXAMPLES:
        raise InputError(f"random_pool has {len(pool_x)} examples; pass at least "
                         f"{3 * MIN_EXAMPLES}")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise OptionError(f"n_random must be a positive int; got {n_random!r}")
    name = layer_name(module, layer)
    first = next(iter(sets.values()))
    pooling = _resolve_pool(pool, first)
    probe = LayerProbe(module, get_submodule(module, name), pooling, batch_size)
    draws = [_draw(len(pool_x), size, seed, i)[0] for i in range(n_random)]  # as in tcav()
    used = np.unique(np.concatenate(draws))
    where = np.full(len(pool_x), -1, dtype=np.int64)
    with model_guard(module):
        acts, offsets, at = [], {}, 0
        for cname in sorted(sets):
            acts.append(probe.activations(sets[cname]))
            offsets[cname] = np.arange(at, at + len(acts[-1]))
            at += len(acts[-1])
        where[used] = np.arange(at, at + len(used))
        acts.append(probe.activations(_take(pool_x, used)))
    A = torch.cat(acts)
    exp = _Experiment(A, torch.zeros(1, A.shape[1], dtype=torch.float64), l2)
    out = {}
    for cname in sets:
        off = offsets[cname]
        with one_thread():
            f = exp.fit([off] * n_random, [where[d] for d in draws], vectors=True)
        assert f.weights is not None
        norms = np.linalg.norm(f.weights, axis=1, keepdims=True)
        out[cname] = CAV(cname, name, f.weights / np.maximum(norms, 1e-300), f.weights,
                         f.intercepts, f.accuracy, pooling, model=module)
    return out
