"""Fitting the interpretable models: trees (and the rules read off them) and sparse linear models.

The surrogate mimics the black box's answers, never the true labels (Craven & Shavlik, 1996,
"Extracting tree-structured representations of trained networks"). Linear surrogates work on
standardised columns so that one penalty ``alpha`` means the same for every column; their
weights are reported back in the columns' own units.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OptionError
from ._rules import TreeRules, read_tree
from .blackbox import Answers

__all__ = ["LinearFit", "fit_linear", "fit_tree"]


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """Validate an int >= 1 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionError(f"{name} must be an int >= 1{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def fit_tree(
    X: np.ndarray, answers: Answers, names: list[str], class_names: list[str] | None, *,
    as_list: bool, max_depth: int | None, max_leaves: int | None, min_samples_leaf: int, seed: int,
) -> tuple[Any, TreeRules]:
    """A decision tree on the black box's answers and its rules."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    check_positive_int("max_depth", max_depth, allow_none=True)
    if max_leaves is not None and (check_positive_int("max_leaves", max_leaves) or 0) < 2:
        raise OptionError(f"max_leaves must be an int >= 2 or None, got {max_leaves!r}")
    check_positive_int("min_samples_leaf", min_samples_leaf)
    cls = DecisionTreeClassifier if answers.task == "classification" else DecisionTreeRegressor
    est = cls(max_depth=max_depth, max_leaf_nodes=max_leaves, min_samples_leaf=min_samples_leaf,
              random_state=seed)
    est.fit(X, answers.target)
    labels = class_names if answers.task == "classification" else None
    return est, read_tree(est, names, labels, as_list=as_list)


@dataclass
class LinearFit:
    """A sparse linear model on standardised columns."""

    estimator: Any
    mean: np.ndarray
    scale: np.ndarray
    y_scale: float = 1.0
    alpha: float = 0.0
    path: dict[str, Any] = field(default_factory=dict)

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """Columns centred and scaled as at fit time."""
        return np.asarray((X - self.mean) / self.scale, dtype=np.float64)

    def coef(self) -> np.ndarray:
        """Weights in the columns' own units, (K, F) (K = 1 for binary and regression)."""
        c = np.atleast_2d(np.asarray(self.estimator.coef_, dtype=np.float64))
        return np.asarray(c * self.y_scale / self.scale, dtype=np.float64)

    def intercept(self) -> np.ndarray:
        """Intercepts in the columns' own units, (K,)."""
        c = np.atleast_2d(np.asarray(self.estimator.coef_, dtype=np.float64))
        b = np.atleast_1d(np.asarray(self.estimator.intercept_, dtype=np.float64))
        return np.asarray((b - (c * self.mean / self.scale).sum(axis=1)) * self.y_scale, dtype=np.float64)

    def n_nonzero(self) -> int:
        """Number of non-zero weights."""
        return int(np.count_nonzero(self.estimator.coef_))


def _l1_logistic(C: float, seed: int, multiclass: bool) -> Any:
    from sklearn.linear_model import LogisticRegression

    kw: dict[str, Any] = {"C": C, "solver": "saga" if multiclass else "liblinear", "max_iter": 2000,
                          "random_state": seed, "tol": 1e-4}
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        kw["l1_ratio"] = 1.0  # scikit-learn >= 1.8 spells the L1 penalty this way
    else:  # pragma: no cover - older scikit-learn
        kw["penalty"] = "l1"
    return LogisticRegression(**kw)


def fit_linear(
    X: np.ndarray, answers: Answers, *, alpha: float, max_features: int | None, seed: int
) -> LinearFit:
    """Sparse logistic regression (classification) or the Lasso (regression).

    ``alpha`` is the L1 penalty per row on standardised columns (logistic: ``C = 1 / (alpha *
    n)``; Lasso: its own ``alpha`` on the target scaled to unit variance). With ``max_features``
    the penalty is instead the weakest on a path of 30 that keeps at most that many columns.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise OptionError(f"alpha must be a positive number, got {alpha!r}")
    check_positive_int("max_features", max_features, allow_none=True)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    Xs = (X - mean) / scale
    if answers.task == "regression":
        return _fit_lasso(Xs, answers.target, mean, scale, alpha, max_features)
    classes = np.unique(answers.target)
    if classes.size < 2:
        raise OptionError(
            f"the model predicts a single class ({int(classes[0])}) on every row, so a linear "
            "classifier cannot be fitted; use kind='tree' or rows where its answers differ"
        )
    multi = classes.size > 2
    n = X.shape[0]
    if max_features is None or max_features >= X.shape[1]:  # no constraint: the plain penalty
        est = _quiet_fit(_l1_logistic(1.0 / (alpha * n), seed, multi), Xs, answers.target)
        return LinearFit(est, mean, scale, alpha=float(alpha))
    from sklearn.svm import l1_min_c

    c0 = float(l1_min_c(Xs, answers.target, loss="log"))
    best = None
    for C in c0 * np.logspace(0, 4, 30):  # weaker and weaker penalties, until too many columns
        est = _quiet_fit(_l1_logistic(float(C), seed, multi), Xs, answers.target)
        if int(np.count_nonzero(np.abs(est.coef_).sum(axis=0))) > max_features:
            break
        best = (est, float(C))
    if best is None:  # pragma: no cover - the weakest penalty on the path keeps no column
        best = (_quiet_fit(_l1_logistic(c0, seed, multi), Xs, answers.target), c0)
    return LinearFit(best[0], mean, scale, alpha=1.0 / (best[1] * n), path={"max_features": max_features})


def _quiet_fit(est: Any, X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return est


def _fit_lasso(
    Xs: np.ndarray, y: np.ndarray, mean: np.ndarray, scale: np.ndarray, alpha: float, max_features: int | None
) -> LinearFit:
    from sklearn.linear_model import Lasso, lasso_path

    y_scale = float(y.std()) or 1.0
    ys = y / y_scale
    if max_features is not None and max_features < Xs.shape[1]:
        yc = ys - ys.mean()
        top = float(np.abs(Xs.T @ yc).max()) / Xs.shape[0] or 1.0
        alphas, coefs, _ = lasso_path(Xs, yc, alphas=top * np.logspace(0, -3, 30))
        ok = [a for a, c in zip(alphas, coefs.T) if np.count_nonzero(c) <= max_features]
        alpha = float(min(ok))
    est = _quiet_fit(Lasso(alpha=alpha, max_iter=20000), Xs, ys)
    path = {} if max_features is None else {"max_features": max_features}
    return LinearFit(est, mean, scale, y_scale=y_scale, alpha=float(alpha), path=path)
