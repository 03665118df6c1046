"""How good are the scores? Measured against actual retraining, on one retraining mechanism.

A *retrain function* maps training-row weights ``w`` (``[n_train]``; 0 leaves a row out) to the
explained rows' losses after training with the objective ``(1/n) sum_i w_i loss_i + (l2/2)
||theta||^2``. :class:`Retrainer` is the built-in one: it refits the chosen parameters (the last
layer, or a whole logistic regression) by Newton's method, warm-started, to a gradient norm
below ``tol`` (1e-8), with every other parameter fixed. Any callable of that shape can take
its place (``retrain=``), e.g. one that retrains a whole network.

* :func:`loo_correlation` — leave-one-out: remove rows one at a time (``w_j = 0``); Pearson
  correlation between the predicted change of each test loss (``+score / n``) and the actual.
* :func:`lds` — the linear datamodeling score (Park et al. 2023): train on ``m`` random subsets
  of a share ``alpha`` of the rows; per test row, Spearman correlation over the subsets between
  the summed scores of the rows kept and minus the test loss; averaged over test rows.
* :func:`mislabel_auc` — flip a share of the labels, retrain, rank rows by self-influence: the
  ROC AUC of finding the flipped ones.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.hooks import model_guard
from ..errors import InputError, OptionError
from ..zoo.fitting import one_thread
from ._inputs import check_rows, check_targets, split_train
from .estimators import Problem, threads_for, training_influence
from .per_example import LossFn, TrainingObjective
from .result import TrainingAttribution

__all__ = ["RetrainFn", "Retrainer", "auc", "evaluate_attribution", "lds", "loo_correlation", "mislabel_auc",
           "self_influence", "spearman"]

RetrainFn = Callable[[np.ndarray], np.ndarray]


class Retrainer:
    """Refit the chosen parameters of ``model`` on weighted training rows; a retrain function.

    Newton's method on ``(1/n) sum_i w_i loss_i + (l2/2) ||theta||^2`` over the chosen
    parameters (``params="last"`` by default: the last layer on fixed features; for a model
    that is one linear layer, that is logistic regression), warm-started from the base optimum
    (``start`` or the model's parameters refit with all weights 1), to a gradient norm below
    ``tol``. The Hessian at the start (for a few re-weighted rows, the base Hessian corrected by
    theirs) is factored once per fit and kept while the steps converge fast; otherwise it is
    recomputed. ``model`` is never modified.
    """

    def __init__(self, model: nn.Module, train: Any, inputs: Any, targets: Any, *,
                 params: str | Sequence[str] = "last", loss: str | LossFn = "auto", l2: float = 0.0,
                 tol: float = 1e-8, max_iter: int = 100, max_params: int = 6000) -> None:
        x_tr, y_tr = check_rows(*split_train(train), what="training rows")
        x_te, y_te = check_rows(inputs, targets, what="inputs")
        if not (isinstance(tol, float) and tol > 0):
            raise OptionError(f"tol must be a float > 0, got {tol!r}")
        self.model = model
        with model_guard(model):
            self.objective = TrainingObjective.build(model, x_tr[:1], y_tr[:1], params=params, loss=loss, l2=l2)
            theta = self.objective.theta0()
            n_out = int(self.objective.outputs(theta, x_tr[:1]).detach()[0].numel())
        check_targets(y_tr, self.objective.loss_name, n_out, what="training rows")
        if self.objective.size > max_params:
            raise OptionError(
                f"the built-in retrainer uses Newton's method on {self.objective.size} parameters, more than "
                f"max_params={max_params}; use params='last' or pass your own retrain function"
            )
        dt = theta.dtype
        self.x_train = x_tr.to(dt) if x_tr.is_floating_point() else x_tr
        self.y_train, self.y_test = y_tr, y_te
        self.x_test = x_te.to(dt) if x_te.is_floating_point() else x_te
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.n = int(x_tr.shape[0])
        self.fits = 0
        self.iterations = 0
        self._h_base: torch.Tensor | None = None
        self.base = theta
        self.base = self.fit(np.ones(self.n))
        with one_thread():
            self._h_base = self.hessian(self.base, torch.ones(self.n, dtype=theta.dtype))
        self.base_losses = self.test_losses(self.base)

    # -- the objective ------------------------------------------------------------------------
    def _problem(self) -> Problem:
        return Problem(self.objective, self.base, self.x_train, self.y_train, self.x_test, self.y_test)

    def gradient(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Gradient of the weighted objective at ``theta``."""
        obj = self.objective
        g = torch.zeros_like(theta)
        with model_guard(self.model):
            for a, b in obj.each_chunk(self.n):
                g += torch.func.grad(obj.weighted_loss)(theta, self.x_train[a:b], self.y_train[a:b], w[a:b])
        return g / self.n + obj.l2 * theta

    def value(self, theta: torch.Tensor, w: torch.Tensor) -> float:
        obj = self.objective
        total = 0.0
        with torch.no_grad(), model_guard(self.model):
            for a, b in obj.each_chunk(self.n):
                total += float(obj.weighted_loss(theta, self.x_train[a:b], self.y_train[a:b], w[a:b]))
        return total / self.n + 0.5 * obj.l2 * float(theta @ theta)

    def hessian(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        obj, p = self.objective, self.objective.size
        h = torch.zeros(p, p, dtype=theta.dtype)
        with model_guard(self.model):
            for a, b in obj.each_chunk(self.n, extra_per_row=8 * p * theta.element_size()):
                h += torch.func.hessian(obj.weighted_loss)(theta, self.x_train[a:b], self.y_train[a:b], w[a:b])
        h = h / self.n + obj.l2 * torch.eye(p, dtype=h.dtype)
        return 0.5 * (h + h.T)

    def _factorise(self, h: torch.Tensor) -> torch.Tensor:
        p = h.shape[0]
        shift = 0.0
        for _ in range(30):
            chol, info = torch.linalg.cholesky_ex(h + shift * torch.eye(p, dtype=h.dtype))
            if int(info) == 0:
                return torch.as_tensor(chol)
            shift = max(2 * shift, 1e-10 * float(h.diagonal().abs().max()) + 1e-12)
        raise OptionError("the training objective's Hessian is not positive definite; add an l2 penalty")

    # -- fitting ------------------------------------------------------------------------------
    def _start_hessian(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The weighted objective's Hessian at the warm start: the base Hessian corrected by the
        few rows whose weight changed (leave-one-out), or computed afresh."""
        changed = torch.nonzero(w != 1).reshape(-1)
        if self._h_base is None or changed.numel() > 16 or not torch.equal(theta, self.base):
            return self.hessian(theta, w)
        obj = self.objective
        h = self._h_base.clone()
        with model_guard(self.model):
            for i in changed.tolist():
                h += (float(w[i]) - 1.0) / self.n * torch.func.hessian(obj.weighted_loss)(
                    theta, self.x_train[i:i + 1], self.y_train[i:i + 1])
        return 0.5 * (h + h.T)

    def fit(self, weights: np.ndarray, start: torch.Tensor | None = None) -> torch.Tensor:
        """The chosen parameters minimising the objective with row weights ``weights``, by
        Newton's method from ``start`` (default: the base optimum), to ``|grad| < tol``.
        Small problems run on one thread (many threads on tiny steps are slower on a busy
        machine)."""
        if self.n * self.objective.size <= 50_000_000:
            with one_thread():
                return self._fit(weights, start)
        return self._fit(weights, start)

    def _fit(self, weights: np.ndarray, start: torch.Tensor | None) -> torch.Tensor:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64)).to(self.base.dtype)
        if w.shape != (self.n,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise InputError(f"weights must be {self.n} finite numbers >= 0, got shape {tuple(w.shape)}")
        theta = (self.base if start is None else start).clone()
        self.fits += 1
        g = self.gradient(theta, w)
        factor: torch.Tensor | None = None
        for _ in range(self.max_iter):
            gn = float(g.norm())
            if gn < self.tol:
                return theta
            if factor is None:
                factor = self._factorise(self._start_hessian(theta, w))
            step = torch.cholesky_solve(-g[:, None], factor)[:, 0]
            cand = theta + step
            g_new = self.gradient(cand, w)
            if float(g_new.norm()) >= gn:  # the full step overshoots: backtrack (Armijo)
                f0, t, slope = self.value(theta, w), 0.5, float(g @ step)
                while t > 1e-10 and self.value(theta + t * step, w) > f0 + 1e-4 * t * slope:
                    t *= 0.5
                cand = theta + t * step
                g_new = self.gradient(cand, w)
            if float(g_new.norm()) > 0.25 * gn:
                factor = self._factorise(self.hessian(cand, w))  # slow progress: a fresh Hessian
            theta, g = cand, g_new
            self.iterations += 1
        raise OptionError(
            f"retraining did not reach a gradient norm below tol={self.tol} in {self.max_iter} Newton steps "
            f"(last {float(g.norm()):.3g}); raise max_iter or the l2 penalty"
        )

    def test_losses(self, theta: torch.Tensor) -> np.ndarray:
        """The explained rows' losses with the chosen parameters set to ``theta``."""
        with torch.no_grad(), model_guard(self.model):
            return self.objective.row_losses(theta, self.x_test, self.y_test).double().cpu().numpy()

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """Retrain with ``weights`` (warm-started at the base) and return the test losses."""
        return self.test_losses(self.fit(weights))

    def fitted_model(self) -> nn.Module:
        """A copy of the model with the chosen parameters set to the base optimum (the model
        whose scores the retraining is compared with)."""
        m = copy.deepcopy(self.model)
        named = dict(m.named_parameters())
        with torch.no_grad():
            for name, t in self.objective.unflatten(self.base).items():
                if name in self.objective.names:
                    named[name].copy_(t)
        return m


# -- statistics -------------------------------------------------------------------------------
def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a), dtype=np.float64)
    r[order] = np.arange(len(a), dtype=np.float64)
    sa = a[order]
    i = 0
    while i < len(a):  # average ranks of ties
        j = i
        while j + 1 < len(a) and sa[j + 1] == sa[i]:
            j += 1
        if j > i:
            r[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return r


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else float("nan")


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return _pearson(_ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64)))


def auc(scores: Any, positive: Any) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` (Mann-Whitney, ties count half)."""
    s, pos = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(s) + 1.0
    return (float(r[pos].sum()) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# -- the figures ------------------------------------------------------------------------------
def _scores(result: TrainingAttribution | Any) -> np.ndarray:
    s = result.scores if isinstance(result, TrainingAttribution) else result
    s = s.detach().double().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s, dtype=np.float64)
    if s.ndim != 2:
        raise InputError(f"scores must be [n_test, n_train], got shape {s.shape}")
    return s


def _base_losses(retrain: RetrainFn, n: int) -> np.ndarray:
    base = getattr(retrain, "base_losses", None)
    return np.asarray(base if base is not None else retrain(np.ones(n)), dtype=np.float64)


def loo_correlation(result: TrainingAttribution | Any, retrain: RetrainFn, *, rows: Any = 100,
                    seed: int = 0) -> dict[str, Any]:
    """Leave-one-out correlation: retrain without each of ``rows`` (a count of rows to draw at
    random, or the training positions themselves), compare the actual change of every test
    loss with the predicted ``+score / n``. Returns ``loo_correlation`` (Pearson over all
    pairs of test row and removed row), ``loo_spearman``, the per-test-row mean Pearson
    ``loo_correlation_per_test`` and the arrays ``predicted``/``actual`` ([n_test, n_rows])."""
    s = _scores(result)
    n_test, n = s.shape
    if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool):
        if not 2 <= int(rows):
            raise OptionError(f"rows must be at least 2, got {rows}")
        picked = np.sort(np.random.default_rng(seed).choice(n, size=min(int(rows), n), replace=False))
    else:
        picked = np.asarray(rows, dtype=np.int64).reshape(-1)
        if picked.size < 2 or picked.min() < 0 or picked.max() >= n:
            raise OptionError(f"rows must be at least 2 positions in 0..{n - 1}")
    t0 = time.perf_counter()
    base = _base_losses(retrain, n)
    actual = np.empty((n_test, picked.size))
    for k, j in enumerate(picked):
        w = np.ones(n)
        w[j] = 0.0
        actual[:, k] = np.asarray(retrain(w), dtype=np.float64) - base
    predicted = s[:, picked] / n
    per_test = [_pearson(predicted[t], actual[t]) for t in range(n_test)]
    return {"loo_correlation": _pearson(predicted.ravel(), actual.ravel()),
            "loo_spearman": spearman(predicted.ravel(), actual.ravel()),
            "loo_correlation_per_test": float(np.nanmean(per_test)) if n_test else float("nan"),
            "loo_rows": int(picked.size), "seconds_loo": time.perf_counter() - t0,
            "predicted": predicted, "actual": actual, "rows": picked}


def lds(result: TrainingAttribution | Any, retrain: RetrainFn, *, subsets: int = 50, alpha: float = 0.5,
        seed: int = 0) -> dict[str, Any]:
    """Linear datamodeling score: ``subsets`` random subsets of ``alpha * n`` rows each; each
    subset's model is trained on those rows alone (weights ``n / |S|`` on them, 0 elsewhere, so
    the objective is their mean loss). Per test row, Spearman between ``sum_{i in S} score_i``
    and ``-loss`` over the subsets; ``lds`` is their mean."""
    s = _scores(result)
    n_test, n = s.shape
    if not (isinstance(subsets, int) and subsets >= 3):
        raise OptionError(f"subsets must be an int >= 3, got {subsets!r}")
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise OptionError(f"alpha must be a share between 0 and 1, got {alpha!r}")
    rng = np.random.default_rng(seed)
    size = max(1, int(round(alpha * n)))
    t0 = time.perf_counter()
    masks = np.zeros((subsets, n), dtype=bool)
    out = np.empty((subsets, n_test))
    for k in range(subsets):
        masks[k, rng.choice(n, size=size, replace=False)] = True
        out[k] = -np.asarray(retrain(masks[k] * (n / size)), dtype=np.float64)
    predicted = masks.astype(np.float64) @ s.T  # [subsets, n_test]
    per_test = np.array([spearman(predicted[:, t], out[:, t]) for t in range(n_test)])
    return {"lds": float(np.nanmean(per_test)), "lds_subsets": subsets, "lds_alpha": alpha,
            "seconds_lds": time.perf_counter() - t0, "lds_per_test": per_test}


def _flip(y: torch.Tensor, n_classes: int, share: float, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    n = int(y.shape[0])
    k = max(1, int(round(share * n)))
    idx = rng.choice(n, size=k, replace=False)
    y2 = y.clone()
    shift = torch.as_tensor(rng.integers(1, n_classes, size=k), dtype=y.dtype)
    y2[idx] = (y[idx] + shift) % n_classes
    flipped = np.zeros(n, dtype=bool)
    flipped[idx] = True
    return y2, flipped


def mislabel_auc(model: nn.Module, train: Any, *, share: float = 0.05, method: str = "influence",
                 params: str | Sequence[str] = "last", l2: float = 0.0, loss: str | LossFn = "auto",
                 seed: int = 0, retrain: bool = True, tol: float = 1e-8, **options: Any) -> dict[str, Any]:
    """Flip the labels of a share of the training rows (to another class, at random), retrain
    the chosen parameters on the corrupted labels (built-in :class:`Retrainer`; ``retrain=False``
    keeps the model as it is), score each row's self-influence with ``method`` and return the
    ROC AUC of finding the flipped rows (``mislabel_auc``), the share of them found in the top
    ``share`` and in the top ``2 * share`` of the ranking, and the flipped positions."""
    if not (isinstance(share, float) and 0 < share < 0.5):
        raise OptionError(f"share must be a float between 0 and 0.5, got {share!r}")
    x, y = check_rows(*split_train(train), what="training rows")
    if y.is_floating_point():
        raise InputError("mislabel detection needs class labels (integer targets)")
    with torch.no_grad(), model_guard(model):
        n_out = int(model(x[:1].to(next(model.parameters()).dtype)).reshape(1, -1).shape[1])
    n_classes = 2 if n_out == 1 else n_out
    rng = np.random.default_rng(seed)
    y_bad, flipped = _flip(y, n_classes, share, rng)
    t0 = time.perf_counter()
    fitted = model
    if retrain:
        fitted = Retrainer(model, (x, y_bad), x[:1], y_bad[:1], params=params, loss=loss, l2=l2,
                           tol=tol).fitted_model()
    t1 = time.perf_counter()
    self_scores = self_influence(fitted, (x, y_bad), method=method, params=params, loss=loss, l2=l2, **options)
    order = np.argsort(-self_scores, kind="stable")
    k = int(flipped.sum())
    return {"mislabel_auc": auc(self_scores, flipped), "mislabel_share": share,
            "mislabel_found_top": float(flipped[order[:k]].mean()),
            "mislabel_found_top2": float(flipped[order[:2 * k]].sum() / k),
            "seconds_mislabel_retrain": t1 - t0, "seconds_mislabel_scores": time.perf_counter() - t1,
            "flipped": np.flatnonzero(flipped), "self_influence": self_scores}


def self_influence(model: nn.Module, train: Any, *, method: str = "influence",
                   params: str | Sequence[str] | None = None, loss: str | LossFn = "auto", l2: float = 0.0,
                   chunk: int = 256, **options: Any) -> np.ndarray:
    """Each training row's score for itself (``[n_train]``): for ``"influence"``
    ``g_i^T (H + damping I)^-1 g_i`` directly; for other methods the diagonal of the scores
    with the training rows explained, ``chunk`` rows at a time."""
    x, y = check_rows(*split_train(train), what="training rows")
    if method == "influence":
        from .influence import _OPTIONS, self_influence_scores

        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise OptionError(f"method 'influence' has no option {unknown[0]!r}; its options are {sorted(_OPTIONS)}")
        with model_guard(model):
            obj = TrainingObjective.build(model, x[:1], y[:1], params=params or "all", loss=loss, l2=l2)
            theta = obj.theta0()
            dt = theta.dtype
            prob = Problem(obj, theta, x.to(dt) if x.is_floating_point() else x, y, x[:1], y[:1])
            with threads_for(prob):
                return self_influence_scores(prob, **options).double().cpu().numpy()
    out = []
    for a in range(0, int(x.shape[0]), chunk):
        b = min(a + chunk, int(x.shape[0]))
        r = training_influence(model, (x, y), x[a:b], y[a:b], method=method, params=params, loss=loss, l2=l2,
                               **options)
        out.append(r.scores.double().cpu().numpy()[np.arange(b - a), np.arange(a, b)])
    return np.concatenate(out)


def evaluate_attribution(result: TrainingAttribution, retrain: RetrainFn, *, loo_rows: Any = 100,
                         lds_subsets: int = 0, seed: int = 0) -> TrainingAttribution:
    """Measure ``result`` against ``retrain`` (LOO, and LDS when ``lds_subsets`` > 0) and record
    the figures in ``result.evaluation`` (and the seconds in ``result.timings``)."""
    if loo_rows:
        loo = loo_correlation(result, retrain, rows=loo_rows, seed=seed)
        result.evaluation.update({k: float(loo[k]) for k in ("loo_correlation", "loo_spearman",
                                                             "loo_correlation_per_test")})
        result.evaluation["loo_rows"] = float(loo["loo_rows"])
        result.timings["loo"] = float(loo["seconds_loo"])
    if lds_subsets:
        d = lds(result, retrain, subsets=lds_subsets, seed=seed)
        result.evaluation["lds"] = float(d["lds"])
        result.evaluation["lds_subsets"] = float(lds_subsets)
        result.timings["lds"] = float(d["seconds_lds"])
    return result
