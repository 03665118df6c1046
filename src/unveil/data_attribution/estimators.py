"""The table of data-attribution estimators and the one entry point that dispatches to them.

An estimator is a function ``fn(problem, **options) -> (scores, params)`` taking a
:class:`Problem` (the training objective, the training rows and the explained rows) and
returning the ``[n_test, n_train]`` scores in the sign convention of
:class:`~unveil.data_attribution.TrainingAttribution` (positive = proponent) and the settings
it used. :func:`register_estimator` adds one to the table; :func:`training_influence` checks
the inputs, looks the method up, runs it with the model guarded (eval mode, parameters and
``requires_grad`` restored) and wraps the scores in a result.
"""

from __future__ import annotations

import contextlib
import difflib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.batching import BatchSize
from ..core.hooks import model_guard
from ..errors import NotDifferentiableError, OptionError, UnknownMethodError
from ..zoo.fitting import one_thread
from ._inputs import check_rows, check_targets, split_train
from .per_example import LossFn, TrainingObjective
from .result import TrainingAttribution

__all__ = ["ESTIMATORS", "Estimator", "Problem", "register_estimator", "threads_for", "training_influence"]


@dataclass
class Problem:
    """What an estimator works on: the objective at the trained parameters ``theta``, the
    training rows and the explained rows with their targets."""

    objective: TrainingObjective
    theta: torch.Tensor
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def train_gradients_times(self, v: torch.Tensor) -> torch.Tensor:
        """``G_train @ v`` for ``v`` of shape ``[P, k]``, streamed over chunks of training rows
        (``[n_train, k]``); the per-example gradients never exist all at once."""
        out = self.objective.map_gradients(self.theta, self.x_train, self.y_train,
                                           lambda a, b, g: g @ v.to(g.dtype))
        assert out is not None
        return out

    def test_gradients(self) -> torch.Tensor:
        """Per-example gradients of the explained rows' losses, ``[n_test, P]``."""
        out = self.objective.map_gradients(self.theta, self.x_test, self.y_test, lambda a, b, g: g)
        assert out is not None
        return out


@contextlib.contextmanager
def threads_for(prob: Problem) -> Iterator[None]:
    """One intra-op thread for small problems (training rows x parameters up to 5e7), whose
    many tiny steps run several times faster so on a busy machine; the torch default else."""
    if prob.n_train * prob.objective.size <= 50_000_000:
        with one_thread():
            yield
    else:
        yield


EstimatorFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]


@dataclass
class Estimator:
    """One entry of the table: the function, its options with defaults, the parameters it
    attributes through by default (``"all"`` or ``"last"``) and a one-line description."""

    name: str
    fn: EstimatorFn
    options: dict[str, Any]
    default_params: str = "all"
    description: str = ""


ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str, fn: EstimatorFn, *, options: dict[str, Any] | None = None,
                       default_params: str = "all", description: str = "") -> None:
    """Add ``fn`` to the table under ``name`` (replacing an entry of that name)."""
    ESTIMATORS[name] = Estimator(name, fn, dict(options or {}), default_params, description)


def _lookup(method: str) -> Estimator:
    from . import influence, representer, tracin, trak  # noqa: F401  # register the built-in estimators

    est = ESTIMATORS.get(method)
    if est is None:
        near = difflib.get_close_matches(str(method), list(ESTIMATORS), n=1)
        raise UnknownMethodError(
            f"no data-attribution method {method!r}; known: {sorted(ESTIMATORS)}"
            f"{f' (did you mean {near[0]!r}?)' if near else ''}"
        )
    return est


def _as_numpy(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def training_influence(
    model: nn.Module,
    train: Any,
    inputs: Any,
    targets: Any,
    *,
    method: str = "influence",
    params: str | Sequence[str] | None = None,
    loss: str | LossFn = "auto",
    l2: float = 0.0,
    batch_size: BatchSize = "auto",
    train_indices: Any = None,
    train_rows: Any = None,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    test_indices: Any = None,
    evaluate: Sequence[str] = (),
    retrain: Callable[[np.ndarray], np.ndarray] | None = None,
    loo_rows: int = 100,
    lds_subsets: int = 20,
    mislabel_share: float = 0.05,
    **options: Any,
) -> TrainingAttribution:
    """Which training rows drove the model's loss on each of ``inputs``.

    ``train=(X, y)`` are the training rows and targets, ``inputs``/``targets`` the explained
    rows and the targets their loss is measured against (usually the model's own decisions or
    the true labels). ``method`` picks the estimator: ``"influence"`` (Koh & Liang 2017;
    ``solver="exact"|"cg"|"lissa"|"arnoldi"``, ``damping``), ``"representer"`` (Yeh et al.
    2018), and whatever else is registered. ``params`` chooses the parameters attributed through
    (``"all"``, ``"last"`` or names; each method has a default), ``l2`` is the L2 penalty of the
    training objective ``mean loss + l2/2 ||theta||^2``, ``loss`` the per-row loss (see
    :mod:`~unveil.data_attribution.per_example`). ``train_rows`` (default: ``X`` when it has at
    most 20,000 rows) is kept for display. The model is left unchanged.

    ``evaluate`` measures the scores and records the figures in ``result.evaluation``:
    ``"loo"`` (leave-one-out correlation over ``loo_rows`` rows), ``"lds"`` (``lds_subsets``
    random halves) and ``"mislabel"`` (self-influence AUC with ``mislabel_share`` of the labels
    flipped). Retraining goes through ``retrain`` (training-row weights -> losses of ``inputs``)
    or, by default, the built-in :class:`~unveil.data_attribution.evaluation.Retrainer` on the
    chosen parameters; ``base_gradient_norm`` then says how far the model was from the optimum
    the retraining starts from (the estimators assume a trained model).
    """
    est = _lookup(method)
    bad = sorted(set(evaluate) - {"loo", "lds", "mislabel"}) if not isinstance(evaluate, str) else [evaluate]
    if bad:
        raise OptionError(f"evaluate must be a list of 'loo', 'lds' and 'mislabel', got {evaluate!r}")
    unknown = sorted(set(options) - set(est.options))
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(est.options), n=1)
        raise OptionError(
            f"method {method!r} has no option {unknown[0]!r}; its options are {sorted(est.options)}"
            f"{f' (did you mean {near[0]!r}?)' if near else ''}"
        )
    if not isinstance(model, nn.Module):
        raise NotDifferentiableError(
            f"data attribution needs a torch.nn.Module (gradients with respect to its parameters), "
            f"got {type(model).__name__}"
        )
    if next(iter(model.parameters()), None) is None:
        raise NotDifferentiableError(
            f"the model ({type(model).__name__}) has no parameters, so no training example can have "
            "influenced it through gradients; data attribution needs a trained torch model"
        )
    x_tr_raw, y_tr_raw = split_train(train)
    x_tr, y_tr = check_rows(x_tr_raw, y_tr_raw, what="training rows", model=model)
    x_te, y_te = check_rows(inputs, targets, what="inputs", model=model)
    if x_te.shape[1:] != x_tr.shape[1:]:
        from ..errors import InputError

        raise InputError(
            f"inputs have rows of shape {tuple(x_te.shape[1:])} but the training rows have "
            f"{tuple(x_tr.shape[1:])}; explain rows of the kind the model was trained on"
        )
    n_train = int(x_tr.shape[0])
    idx = np.arange(n_train) if train_indices is None else np.asarray(train_indices, dtype=np.int64).reshape(-1)
    if idx.shape != (n_train,):
        raise OptionError(f"train_indices must give one index per training row ({n_train}), got {idx.shape[0]}")
    opts = {**est.options, **options}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with model_guard(model):
        obj = TrainingObjective.build(model, x_tr[:1], y_tr[:1], params=params or est.default_params,
                                      loss=loss, l2=l2, batch_size=batch_size)
        with torch.no_grad():
            n_out = int(obj.outputs(obj.theta0(), x_tr[:1])[0].numel())
        check_targets(y_tr, obj.loss_name, n_out, what="training rows")
        check_targets(y_te, obj.loss_name, n_out, what="inputs")
        theta = obj.theta0()
        dtype = theta.dtype
        prob = Problem(obj, theta, x_tr.to(dtype) if x_tr.is_floating_point() else x_tr, y_tr,
                       x_te.to(dtype) if x_te.is_floating_point() else x_te, y_te)
        _check_differentiable(prob)
        with threads_for(prob):
            scores, used = est.fn(prob, **opts)
    timings["total"] = time.perf_counter() - t0
    timings.update({k[len("seconds_"):]: float(v) for k, v in used.items() if k.startswith("seconds_")})
    used = {k: v for k, v in used.items() if not k.startswith("seconds_")}
    rows = train_rows if train_rows is not None else (x_tr if n_train <= 20_000 else None)
    class_names = [str(c) for c in class_names] if class_names is not None else None
    feature_names = [str(c) for c in feature_names] if feature_names is not None else None
    all_params: dict[str, Any] = {"params": params or est.default_params, "parameters": obj.names,
                                  "n_parameters": obj.size, "loss": obj.loss_name, "l2": obj.l2, **used}
    if test_indices is not None:
        all_params["test_indices"] = [int(t) for t in np.asarray(test_indices).reshape(-1)]
    result = TrainingAttribution(
        scores=scores.detach(), test_targets=_as_numpy(y_te), train_indices=idx,  # type: ignore[arg-type]
        train_labels=_as_numpy(y_tr), method=method, params=all_params,  # type: ignore[arg-type]
        train_rows=_as_numpy(rows), test_rows=_as_numpy(x_te),
        feature_names=list(feature_names) if feature_names is not None else None,
        class_names=list(class_names) if class_names is not None else None, timings=timings,
    )
    if evaluate:
        _evaluate(result, model, (x_tr, y_tr), x_te, y_te, list(evaluate), retrain,
                  params=params or est.default_params, loss=loss, l2=l2, loo_rows=loo_rows,
                  lds_subsets=lds_subsets, mislabel_share=mislabel_share, options=options)
    return result


def _evaluate(result: TrainingAttribution, model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
              x_te: torch.Tensor, y_te: torch.Tensor, checks: list[str], retrain: Any, *,
              params: str | Sequence[str], loss: str | LossFn, l2: float, loo_rows: int, lds_subsets: int,
              mislabel_share: float, options: dict[str, Any]) -> None:
    from . import evaluation  # local: evaluation imports this module

    if ("loo" in checks or "lds" in checks) and retrain is None:
        built = evaluation.Retrainer(model, train, x_te, y_te, params=params, loss=loss, l2=l2)
        result.evaluation["base_gradient_norm"] = float(built.gradient(
            built.objective.theta0(), torch.ones(built.n, dtype=built.base.dtype)).norm())
        retrain = built
    if "loo" in checks:
        evaluation.evaluate_attribution(result, retrain, loo_rows=loo_rows)
    if "lds" in checks:
        evaluation.evaluate_attribution(result, retrain, loo_rows=0, lds_subsets=lds_subsets)
    if "mislabel" in checks:
        t0 = time.perf_counter()
        out = evaluation.mislabel_auc(model, train, share=mislabel_share, method=result.method, params=params,
                                      loss=loss, l2=l2, **options)
        result.evaluation["mislabel_auc"] = float(out["mislabel_auc"])
        result.evaluation["mislabel_share"] = float(mislabel_share)
        result.timings["mislabel"] = time.perf_counter() - t0


def _check_differentiable(prob: Problem) -> None:
    """Refuse a model whose loss has no gradient with respect to the chosen parameters."""
    k = min(4, prob.n_train)
    try:
        g = prob.objective.gradients(prob.theta, prob.x_train[:k], prob.y_train[:k])
    except RuntimeError as exc:
        raise NotDifferentiableError(
            f"the model's loss cannot be differentiated with respect to its parameters ({exc}); "
            "data attribution needs a differentiable torch model"
        ) from exc
    if not bool(torch.isfinite(g).all()):
        raise NotDifferentiableError("the model's loss gradients are NaN or infinite on the training rows")
    if not bool((g != 0).any()):
        raise NotDifferentiableError(
            "the model's loss has zero gradient with respect to the chosen parameters on every "
            "probed training row (a non-differentiable step such as argmax or rounding, or "
            "parameters the output does not depend on); choose other params or a differentiable model"
        )
