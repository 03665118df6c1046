"""Tables in, black-box outputs out: the shared plumbing of surrogates, global importance and audits.

A table reaches these tools as a tensor, an array or a pandas DataFrame (whose column names
become the feature names). The black box is queried through :class:`~unveil.core.model.Model`
in chunks (:func:`~unveil.core.batching.map_chunked`) under the model guard, and its scores are
turned into what a surrogate mimics: class labels for classifiers, values for regressors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..core.batching import BatchSize, map_chunked
from ..core.model import Model, as_model
from ..errors import InputError, OptionError

__all__ = [
    "Answers",
    "Preprocess",
    "Task",
    "as_table",
    "class_labels",
    "estimator_classes",
    "evaluate_rows",
    "model_answers",
    "model_rows",
    "query",
    "resolve_feature",
    "split_indices",
    "true_labels",
    "with_preprocess",
]

Task = Literal["auto", "classification", "regression"]
Preprocess = Callable[[np.ndarray], Any]


def as_table(X: Any, feature_names: Sequence[str] | None = None, *, name: str = "X") -> tuple[np.ndarray, list[str]]:
    """A float64 (N, F) array and its feature names.

    ``feature_names`` wins over a DataFrame's columns; the default is ``x0, x1, ...``.
    Raises :class:`InputError` for a table that is not 2-D, empty, non-numeric or not finite.
    """
    cols = getattr(X, "columns", None)
    if isinstance(X, torch.Tensor):
        arr = X.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"{name} must be a numeric table (N, F); encode categories as numbers first"
            ) from exc
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty table of shape (N, F), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains {int((~np.isfinite(arr)).sum())} NaN or infinite values; impute them first")
    if feature_names is None and cols is not None:
        feature_names = [str(c) for c in cols]
    names = [f"x{j}" for j in range(arr.shape[1])] if feature_names is None else [str(n) for n in feature_names]
    if len(names) != arr.shape[1]:
        raise InputError(f"{len(names)} feature names for a table of {arr.shape[1]} columns; give one name per column")
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # pandas copy-on-write hands out read-only views
        arr = arr.copy()
    return arr, names


def estimator_classes(model: Model) -> np.ndarray | None:
    """The ``classes_`` of a scikit-learn classifier (its ``predict_proba`` column order), else ``None``."""
    obj = model.obj
    while isinstance(obj, _OnRows):  # a preprocessing wrapper answers with the inner model's columns
        obj = obj.model.obj
    classes = getattr(obj, "classes_", None)
    if classes is None or not hasattr(obj, "predict_proba"):
        return None
    return np.asarray(classes)


def true_labels(y: Any, n: int, model: Model, *, what: str = "y") -> np.ndarray:
    """Labels ``y`` as class indices (int64) or values (float64), shape (n,).

    A scikit-learn classifier's own labels (``"benign"``, ``-1``/``1`` ...) are mapped to the
    index of its ``predict_proba`` column, the index the black box's answers use.
    """
    arr = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{what} must hold one value per row ({n}), got shape {arr.shape}")
    classes = estimator_classes(model)
    if classes is not None:
        pos = {c.item() if hasattr(c, "item") else c: k for k, c in enumerate(classes)}
        values, inverse = np.unique(arr, return_inverse=True)  # look up each distinct label once
        keys = [v.item() if hasattr(v, "item") else v for v in values]
        unknown = sorted(str(k) for k in keys if k not in pos)
        if unknown:
            raise InputError(f"{what} holds labels {unknown[:5]} that the classifier does not know; its "
                             f"classes are {[str(c) for c in classes]}")
        return np.array([pos[k] for k in keys], dtype=np.int64)[inverse.reshape(-1)]
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{what} must hold class indices (0..K-1, the model's output columns) or numbers, "
                         f"got dtype {arr.dtype}; encode the labels in the model's column order")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        return arr.astype(np.float64)
    return arr.astype(np.int64)


def resolve_feature(feature: int | str, names: Sequence[str]) -> int:
    """Column index of ``feature`` (an index or a name)."""
    if isinstance(feature, str):
        if feature not in names:
            raise OptionError(f"no feature named {feature!r}; the features are {list(names)}")
        return list(names).index(feature)
    if isinstance(feature, (bool, np.bool_)) or not isinstance(feature, (int, np.integer)):
        raise OptionError(f"a feature is a column index or a name, got {feature!r}")
    if not -len(names) <= int(feature) < len(names):
        raise OptionError(f"feature index {feature} is out of range for {len(names)} columns")
    return int(feature) % len(names)


def evaluate_rows(
    model: Model, total: int, build: Callable[[int, int], torch.Tensor], *, batch_size: BatchSize = "auto",
    key: tuple[Any, ...] = (),
) -> torch.Tensor:
    """Scores of ``total`` rows built chunk by chunk by ``build(a, b)``, on the CPU in float64.

    ``build`` must be a pure function of the row range (random draws made beforehand).
    """
    def run(a: int, b: int) -> torch.Tensor:
        return model.forward(build(a, b)).detach()

    with model.guard(), torch.no_grad():
        out = map_chunked(run, total, batch_size=batch_size, model=model, key=("surrogate", *key))
    return out.to(device="cpu", dtype=torch.float64)


def model_rows(X: np.ndarray, preprocess: Preprocess | None) -> np.ndarray:
    """The rows as the model takes them: ``preprocess(X)`` (array or tensor, one row per row of
    ``X``), or ``X`` itself. Lets a surrogate read raw units while the model takes, say,
    standardised ones."""
    if preprocess is None:
        return X
    out = preprocess(X.copy())
    arr = np.asarray(out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out)
    if arr.ndim < 1 or arr.shape[0] != X.shape[0] or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"preprocess must return numbers with one row per input row ({X.shape[0]}), "
                         f"got {arr.dtype} of shape {arr.shape}")
    return np.ascontiguousarray(arr)


class _OnRows:
    """``model`` applied to ``preprocess(rows)``: a numpy function of the table's rows."""

    def __init__(self, model: Model, preprocess: Preprocess) -> None:
        self.model, self.preprocess = model, preprocess

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        x = self.model.prepare(torch.from_numpy(model_rows(np.asarray(rows, dtype=np.float64), self.preprocess)))
        with self.model.guard(), torch.no_grad():
            out: np.ndarray = self.model.forward(x).detach().cpu().to(torch.float64).numpy()
        return out


def with_preprocess(model: Model, preprocess: Preprocess) -> Model:
    """A model of the table's rows: ``model`` applied to ``preprocess(rows)``, under ``model``'s
    guard, for the tools that only evaluate the model (surrogates, audits). Labels are still
    read through ``model`` (:func:`estimator_classes` looks through the wrapper)."""
    if not callable(preprocess):
        raise OptionError(f"preprocess must be a function of the table's rows, got {type(preprocess).__name__}")
    return Model(_OnRows(model, preprocess), backend="numpy")


def query(model: Model, X: np.ndarray, *, batch_size: BatchSize = "auto") -> np.ndarray:
    """The black box's scores on the rows of ``X``: (N, K), or (N,) for one output per row."""
    xt = model.prepare(torch.from_numpy(X))
    out = evaluate_rows(model, xt.shape[0], lambda a, b: xt[a:b], batch_size=batch_size,
                        key=("query", X.shape[1])).numpy()
    return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out


@dataclass(frozen=True)
class Answers:
    """What a surrogate mimics: labels (classification) or values (regression), per row."""

    task: Literal["classification", "regression"]
    target: np.ndarray  # int64 labels or float64 values, (N,)
    scores: np.ndarray  # the raw scores the target was read from


def class_labels(scores: np.ndarray, threshold: float | None, *, what: str = "the model") -> np.ndarray:
    """Class labels from scores: argmax for (N, K); for (N,) a threshold, or integral outputs as is."""
    if scores.ndim == 2:
        return np.asarray(scores.argmax(axis=1), dtype=np.int64)
    if threshold is not None:
        return (scores > threshold).astype(np.int64)
    if np.all(scores == np.round(scores)) and scores.min() >= 0:
        return scores.astype(np.int64)
    raise OptionError(
        f"{what} returns one real score per row, so class labels are ambiguous: pass threshold= "
        "(e.g. 0.0 for a logit, 0.5 for a probability), or task='regression' to mimic the score"
    )


def model_answers(scores: np.ndarray, task: Task, threshold: float | None) -> Answers:
    """Resolve the task from the output shape and read labels or values off the scores."""
    if task not in ("auto", "classification", "regression"):
        raise OptionError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    if task == "auto":
        task = "classification" if scores.ndim == 2 or threshold is not None else "regression"
    if task == "regression":
        if scores.ndim == 2:
            raise OptionError(
                f"task='regression' needs one score per row, but the model returns {scores.shape[1]}; "
                "wrap it to return the score you want to mimic"
            )
        return Answers("regression", scores.astype(np.float64), scores)
    return Answers("classification", class_labels(scores, threshold), scores)


def split_indices(
    n: int, val_fraction: float, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint fit and held-out row indices (stratified when every class has two rows)."""
    if not 0.0 < val_fraction < 1.0:
        raise OptionError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n - n_val < 2:
        raise InputError(f"{n} rows are too few to hold out {val_fraction:.0%}; pass more rows or X_val=")
    from sklearn.model_selection import train_test_split

    strat = None
    if stratify is not None:
        _, counts = np.unique(stratify, return_counts=True)
        if counts.min() >= 2 and len(counts) <= n_val:
            strat = stratify
    fit, val = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=strat)
    return np.sort(fit), np.sort(val)


def wrap(model: Any) -> Model:
    """The :class:`Model` for whatever the user passed."""
    return as_model(model)
