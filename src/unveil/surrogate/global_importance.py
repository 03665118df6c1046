"""Global explanations of a black box on a table: which columns matter, and how.

- :func:`permutation_importance`: the drop in a score when one column's values are shuffled
  across rows (Breiman, 2001, "Random forests"; Fisher, Rudin & Dominici, 2019, "All models
  are wrong, but many are useful"). scikit-learn's implementation for scikit-learn estimators;
  for other models every shuffled copy is built and scored in chunks.
- :func:`partial_dependence`: the mean output as one column sweeps a grid with the others as
  observed (Friedman, 2001, "Greedy function approximation"), with the individual conditional
  expectation curve of every row (Goldstein et al., 2015, "Peeking inside the black box").
- :func:`shapley_importance`: mean absolute Shapley value per column (Lundberg & Lee, 2017),
  computed by the registered Shapley methods through :func:`unveil.explain`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..core.batching import BatchSize
from ..core.model import Model, estimator_input
from ..errors import InputError, OptionError
from ._fit import check_positive_int
from .blackbox import (
    Task,
    as_table,
    class_labels,
    evaluate_rows,
    model_answers,
    query,
    resolve_feature,
    true_labels,
    wrap,
)

__all__ = ["GlobalImportance", "PartialDependence", "partial_dependence", "permutation_importance",
           "shapley_importance"]


@dataclass
class GlobalImportance:
    """One importance figure per column.

    Attributes
    ----------
    method : "permutation" or the Shapley method's name
    score : what the figure measures (``"accuracy"``, ``"agreement"``, ``"r2"``,
        ``"mean |shapley|"``)
    importances, importances_std : (F,) arrays — mean over repeats (permutation) or rows
        (Shapley) and the standard deviation
    baseline_score : the score before shuffling (permutation only)
    samples : (F, R) per-repeat drops (permutation) or (N, F) |Shapley values|
    """

    method: str
    score: str
    feature_names: list[str]
    importances: np.ndarray
    importances_std: np.ndarray
    baseline_score: float | None = None
    samples: np.ndarray | None = None

    def ranking(self) -> list[tuple[str, float]]:
        """(name, importance) from the most to the least important column."""
        order = np.argsort(-self.importances, kind="stable")
        return [(self.feature_names[j], float(self.importances[j])) for j in order]

    def shares(self) -> dict[str, float]:
        """Each column's share of the total (negative importances count as 0)."""
        pos = np.clip(self.importances, 0.0, None)
        total = float(pos.sum())
        return {n: (float(v) / total if total > 0 else 0.0) for n, v in zip(self.feature_names, pos)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (without the raw samples)."""
        return {"method": self.method, "score": self.score, "feature_names": list(self.feature_names),
                "importances": self.importances.tolist(), "importances_std": self.importances_std.tolist(),
                "baseline_score": self.baseline_score}

    def plot(self, ax: Any = None, *, top: int = 15) -> Any:
        """Horizontal bars of the ``top`` most important columns (error bars: the std);
        returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        order = np.argsort(-self.importances, kind="stable")[:top][::-1]
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 0.3 * len(order) + 1), layout="constrained")
        ax.barh([self.feature_names[j] for j in order], self.importances[order],
                xerr=self.importances_std[order], color="C0")
        label = {"accuracy": "drop in accuracy", "agreement": "drop in agreement with the model",
                 "r2": "drop in R²"}.get(self.score, self.score)
        ax.set_xlabel(f"{label} ({self.method})" if self.method == "permutation" else label)
        return ax

    def __str__(self) -> str:
        lines = [f"{self.method} importance ({self.score}):"]
        lines += [f"  {n}: {v:.4g}" for n, v in self.ranking()]
        return "\n".join(lines)


def _is_estimator(obj: Any) -> bool:
    return not isinstance(obj, torch.nn.Module) and hasattr(obj, "fit") and hasattr(obj, "predict")


def _score(pred: np.ndarray, ref: np.ndarray, task: str) -> np.ndarray:
    """Accuracy or R² along the last axis (rows)."""
    if task == "classification":
        return np.asarray((pred == ref).mean(axis=-1), dtype=np.float64)
    ss_res = ((pred - ref) ** 2).sum(axis=-1)
    ss_tot = float(((ref - ref.mean()) ** 2).sum()) or 1.0
    return np.asarray(1.0 - ss_res / ss_tot, dtype=np.float64)


def permutation_importance(
    model: Any, X: Any, y: Any = None, *, n_repeats: int = 5, features: Sequence[int | str] | None = None,
    feature_names: Sequence[str] | None = None, task: Task = "auto", threshold: float | None = None,
    engine: Literal["auto", "sklearn", "unveil"] = "auto", seed: int = 0, batch_size: BatchSize = "auto",
) -> GlobalImportance:
    """Drop in accuracy (classification) or R² (regression) when a column is shuffled.

    With ``y`` the score is against the true labels (class indices, or the estimator's own
    labels for a scikit-learn classifier); without, against the black box's own answers on
    ``X`` (``"agreement"``: how much the answers depend on the column). ``engine="auto"`` uses
    :func:`sklearn.inspection.permutation_importance` for scikit-learn estimators.
    """
    m = wrap(model)
    Xa, names = as_table(X, feature_names)
    cols = list(range(Xa.shape[1])) if features is None else [resolve_feature(f, names) for f in features]
    reps = check_positive_int("n_repeats", n_repeats) or 1
    if engine not in ("auto", "sklearn", "unveil"):
        raise OptionError(f"engine must be 'auto', 'sklearn' or 'unveil', got {engine!r}")
    if engine == "sklearn" and not _is_estimator(m.obj):
        raise OptionError("engine='sklearn' needs a scikit-learn estimator; use engine='unveil'")
    if engine != "unveil" and _is_estimator(m.obj):
        return _sklearn_importance(m.obj, Xa, y, names, cols, reps, seed)
    base = model_answers(query(m, Xa, batch_size=batch_size), task, threshold)
    ref = base.target if y is None else true_labels(y, Xa.shape[0], m)
    out = _shuffled_outputs(m, Xa, cols, reps, np.random.default_rng(seed), batch_size)
    pred = class_labels(out, threshold) if base.task == "classification" else out
    scores = _score(pred.reshape(len(cols), reps, Xa.shape[0]), ref, base.task)
    base_score = float(_score(base.target, ref, base.task))
    drops = base_score - scores
    label = ("accuracy" if y is not None else "agreement") if base.task == "classification" else "r2"
    return GlobalImportance("permutation", label, [names[c] for c in cols], drops.mean(axis=1),
                            drops.std(axis=1), base_score, drops)


def _shuffled_outputs(
    m: Model, Xa: np.ndarray, cols: list[int], reps: int, rng: np.random.Generator, batch_size: BatchSize
) -> np.ndarray:
    """Outputs on every shuffled copy: rows ordered (column, repeat, row)."""
    n = Xa.shape[0]
    perms = rng.permuted(np.tile(np.arange(n), (len(cols) * reps, 1)), axis=1)  # drawn before chunking
    xt = m.prepare(torch.from_numpy(Xa))
    pt = torch.from_numpy(perms.reshape(-1)).to(xt.device)
    colt = torch.tensor(cols, device=xt.device)

    def build(a: int, b: int) -> torch.Tensor:
        r = torch.arange(a, b, device=xt.device)
        rows = xt[r % n].clone()
        c = colt[r // (reps * n)]
        rows[torch.arange(b - a, device=xt.device), c] = xt[pt[r], c]
        return rows

    out = evaluate_rows(m, len(cols) * reps * n, build, batch_size=batch_size, key=("permute", Xa.shape[1]))
    res = out.numpy()
    return res[:, 0] if res.ndim == 2 and res.shape[1] == 1 else res


def _sklearn_importance(
    est: Any, Xa: np.ndarray, y: Any, names: list[str], cols: list[int], reps: int, seed: int
) -> GlobalImportance:
    from sklearn.base import is_classifier
    from sklearn.inspection import permutation_importance as sk_pi

    Xe = estimator_input(est, Xa)
    ref = est.predict(Xe) if y is None else np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if ref.shape != (Xa.shape[0],):
        raise InputError(f"y must hold one value per row ({Xa.shape[0]}), got shape {ref.shape}")
    clf = is_classifier(est)
    scoring = "accuracy" if clf else "r2"
    r = sk_pi(est, Xe, ref, scoring=scoring, n_repeats=reps, random_state=seed)
    base = float(est.score(Xe, ref))
    label = ("accuracy" if y is not None else "agreement") if clf else "r2"
    return GlobalImportance("permutation", label, [names[c] for c in cols], r.importances_mean[cols],
                            r.importances_std[cols], base, r.importances[cols])


@dataclass
class PartialDependence:
    """Partial dependence and ICE curves of one column.

    Attributes
    ----------
    grid : (G,) values the column takes
    average : (G,) or (G, K) — mean output over rows (the partial dependence)
    individual : (N, G) or (N, G, K) — each row's output along the grid (ICE)
    target : the output column kept, or ``None`` when all are kept
    """

    feature: str
    index: int
    grid: np.ndarray
    average: np.ndarray
    individual: np.ndarray
    target: int | None

    def centered(self) -> np.ndarray:
        """ICE curves minus each curve's value at the first grid point (c-ICE)."""
        return np.asarray(self.individual - self.individual[:, :1], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (averages only)."""
        return {"feature": self.feature, "index": self.index, "grid": self.grid.tolist(),
                "average": self.average.tolist(), "target": self.target}

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """The partial dependence over the ICE curves; see
        :func:`unveil.report.plot_partial_dependence` (``kind=``, ``centered=``, ``ice=``,
        ``output=``). Returns the matplotlib Axes."""
        from ..report import plots_surrogate

        return plots_surrogate.plot_partial_dependence(self, ax=ax, **kwargs)


def _grid(col: np.ndarray, resolution: int, percentiles: tuple[float, float]) -> np.ndarray:
    """Unique values when fewer than ``resolution``; else evenly spaced between percentiles
    (from scipy's ``mquantiles`` with its defaults, as scikit-learn does, so the grids agree)."""
    from scipy.stats.mstats import mquantiles

    uniq = np.unique(col)
    if uniq.size < resolution:
        return uniq
    lo, hi = (float(v) for v in mquantiles(col, prob=percentiles))
    if np.isclose(lo, hi):
        raise OptionError(f"percentiles {percentiles} give one value ({lo}); widen them")
    return np.linspace(lo, hi, resolution)


def partial_dependence(
    model: Any, X: Any, features: int | str | Sequence[int | str], *,
    grid: Mapping[int | str, Any] | None = None, grid_resolution: int = 20,
    percentiles: tuple[float, float] = (0.05, 0.95), target: int | None = None,
    feature_names: Sequence[str] | None = None, batch_size: BatchSize = "auto",
) -> list[PartialDependence]:
    """Partial dependence and ICE curves, one :class:`PartialDependence` per feature.

    ``grid`` maps a feature (name or index) to its own grid values; the default grid is the
    column's unique values when fewer than ``grid_resolution``, else ``grid_resolution`` evenly
    spaced values between the ``percentiles``. ``target`` keeps one output column (``None``
    keeps all). All N×G rows of a feature are built and scored in chunks.
    """
    m = wrap(model)
    Xa, names = as_table(X, feature_names)
    feats = [features] if isinstance(features, (int, str, np.integer)) else list(features)
    res = check_positive_int("grid_resolution", grid_resolution) or 2
    if not (0.0 <= percentiles[0] < percentiles[1] <= 1.0):
        raise OptionError(f"percentiles must be increasing fractions in [0, 1], got {percentiles}")
    given = {resolve_feature(k, names): np.asarray(v, dtype=np.float64) for k, v in (grid or {}).items()}
    xt = m.prepare(torch.from_numpy(Xa))
    out = []
    for f in (resolve_feature(f, names) for f in feats):
        g = given[f] if f in given else _grid(Xa[:, f], res, percentiles)
        if g.ndim != 1 or g.size == 0:
            raise OptionError(f"the grid of {names[f]!r} must be a non-empty 1-D array")
        out.append(_pd_one(m, xt, f, names[f], g, target, batch_size))
    return out


def _pd_one(m: Model, xt: torch.Tensor, f: int, name: str, g: np.ndarray, target: int | None,
            batch_size: BatchSize) -> PartialDependence:
    n, ng = xt.shape[0], g.size
    gt = torch.from_numpy(g).to(device=xt.device, dtype=xt.dtype)

    def build(a: int, b: int) -> torch.Tensor:
        r = torch.arange(a, b, device=xt.device)
        rows = xt[r // ng].clone()
        rows[:, f] = gt[r % ng]
        return rows

    vals = evaluate_rows(m, n * ng, build, batch_size=batch_size, key=("pdp", xt.shape[1])).numpy()
    if vals.ndim == 2 and vals.shape[1] == 1:
        vals = vals[:, 0]
    if target is not None:
        if vals.ndim != 2 or not 0 <= int(target) < vals.shape[1]:
            raise OptionError(f"target {target} is not an output column of a model returning shape "
                              f"{vals.shape[1:]}; pass None to keep all outputs")
        vals = vals[:, int(target)]
    ind = vals.reshape(n, ng, *vals.shape[1:])
    return PartialDependence(name, f, g, ind.mean(axis=0), ind, target)


def shapley_importance(
    model: Any, X: Any, *, method: str = "kernel_shap", background: Any = None,
    target: Any = "predicted", feature_names: Sequence[str] | None = None, n_background: int = 50,
    seed: int = 0, **options: Any,
) -> GlobalImportance:
    """Mean |Shapley value| of each column over the rows of ``X``.

    Calls :func:`unveil.explain` with ``method`` (``"kernel_shap"``, ``"exact_shapley"`` or
    ``"permutation_shapley"``), the interventional game over ``background`` (default: up to
    ``n_background`` rows of ``X`` drawn with ``seed``), and ``options`` such as ``n_samples=``.
    """
    from ..core.explain import explain

    try:  # the Shapley family registers on import
        import unveil.attribution.shapley  # noqa: F401
    except ImportError:  # pragma: no cover - the method lookup below names what is missing
        pass
    Xa, names = as_table(X, feature_names)
    if background is None:
        rng = np.random.default_rng(seed)
        k = min(check_positive_int("n_background", n_background) or 1, Xa.shape[0])
        background = Xa[np.sort(rng.choice(Xa.shape[0], size=k, replace=False))]
    bg, _ = as_table(background, names, name="background")
    m = wrap(model)
    kw: dict[str, Any] = {"background": torch.from_numpy(bg).float(), **options}
    if method != "exact_shapley":
        kw["seed"] = seed
    exp = explain(m, torch.from_numpy(Xa).float(), method=method, target=target, **kw)
    gv = exp.extras.get("group_values") if exp.extras else None
    phi = np.abs(np.asarray(gv if gv is not None else exp.values, dtype=np.float64))
    return GlobalImportance(method, "mean |shapley|", names, phi.mean(axis=0), phi.std(axis=0), None, phi)
