"""Local surrogates: an interpretable model of the black box around one instance.

Rows are drawn around the instance (Gaussian, ``scale`` standard deviations of each column),
the black box scores them in chunks, and a weighted ridge regression (or a shallow tree) is
fitted to the target score, rows weighted by an exponential kernel of their standardised
distance — the recipe of LIME for tables (Ribeiro, Singh & Guestrin, 2016, "Why should I trust
you?"), with two differences: weights are reported in the columns' own units, and the local
fidelity is a weighted R² on *separate* perturbed rows that were not used to fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..core.batching import BatchSize
from ..core.model import TargetSpec
from ..errors import InputError, OptionError
from ._fit import check_positive_int
from ._rules import RuleList, fmt_number, read_tree, score_rules
from .blackbox import as_table, estimator_classes, evaluate_rows, wrap

__all__ = ["LocalSurrogate", "local_surrogate", "quartile_borders", "quartile_condition"]


def quartile_borders(X: np.ndarray) -> np.ndarray:
    """(F, 3) quartile borders of each column of reference rows ``X`` (N, F), as LIME's
    discretiser keeps them: a border equal to the one before it becomes ``inf``.
    (:func:`unveil.attribution.lime.quartile_sampler`, which LIME's tables sample from.)"""
    from ..attribution.lime import quartile_sampler

    return np.asarray(quartile_sampler(torch.from_numpy(np.asarray(X, dtype=np.float64)))["borders"].numpy())


def quartile_condition(name: str, value: float, borders: np.ndarray) -> str:
    """The quartile of ``value`` as LIME writes it: ``name <= q1``, ``q1 < name <= q2``, ...,
    ``name > q3`` (two decimals, as ``lime``); ``borders`` is one row of
    :func:`quartile_borders`. A value in a bin with no upper border reads ``name > q``."""
    b = np.asarray(borders, dtype=np.float64)
    fin = b[np.isfinite(b)]
    k = int(np.searchsorted(fin, value, side="left"))  # borders below the value (strictly)
    if fin.size == 0:
        return f"{name} = {value:.2f}"
    if k == 0:
        return f"{name} <= {fin[0]:.2f}"
    if k == fin.size:
        return f"{name} > {fin[-1]:.2f}"
    return f"{fin[k - 1]:.2f} < {name} <= {fin[k]:.2f}"


@dataclass
class LocalSurrogate:
    """A surrogate valid around one instance; made by :func:`local_surrogate`.

    Attributes
    ----------
    instance : (F,) array
    target : int or None — the output explained (``None`` for one score per row)
    model_score : the black box's target score at the instance
    surrogate_score : the surrogate's prediction at the instance
    fidelity : weighted R² on held-out perturbed rows
    weights : dict — linear: weight per column in its own units (score change per unit)
    intercept : float — linear: the surrogate's score at the instance
    rules : RuleList or None — tree: rules with coverage and mean |error| on held-out rows
    scale : (F,) array — the perturbation std of each column, in its own units
    borders : (F, 3) array or None — quartile borders of the reference rows ``X`` (when given),
        from which :meth:`conditions` reads the instance's quartiles
    """

    kind: str
    instance: np.ndarray
    feature_names: list[str]
    target: int | None
    model_score: float
    surrogate_score: float
    fidelity: float
    n_samples: int
    scale: np.ndarray
    kernel_width: float
    estimator: Any
    weights: dict[str, float] | None = None
    intercept: float | None = None
    rules: RuleList | None = None
    target_name: str | None = None  # the class the target index stands for, when known
    borders: np.ndarray | None = None

    def conditions(self) -> list[str]:
        """Each column's value at the instance as people read it, in column order: LIME's
        quartile conditions (``proline > 1035.00``, ``2.10 < alcohol <= 3.40``) from the
        quartiles of the reference rows ``X``, or ``name = value`` when none were given."""
        if self.borders is None:
            return [f"{n} = {fmt_number(float(v))}" for n, v in zip(self.feature_names, self.instance)]
        return [quartile_condition(n, float(v), b)
                for n, v, b in zip(self.feature_names, self.instance, self.borders)]

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Bars of the linear surrogate's effects labelled with :meth:`conditions`; see
        :func:`unveil.report.plot_local_surrogate`. Returns the matplotlib Axes."""
        from ..report import plots_surrogate

        return plots_surrogate.plot_local_surrogate(self, ax=ax, **kwargs)

    def predict(self, X: Any) -> np.ndarray:
        """The surrogate's score for rows ``X`` (N, F)."""
        Xa, _ = as_table(X, self.feature_names)
        inputs = (Xa - self.instance) / self.scale if self.kind == "linear" else Xa
        return np.asarray(self.estimator.predict(inputs), dtype=np.float64)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """Linear: the ``k`` columns with the largest effect of one perturbation std
        (weight × ``scale``)."""
        if self.weights is None:
            raise OptionError("a tree local surrogate has no weights; read .rules")
        eff = {n: float(w * s) for (n, w), s in zip(self.weights.items(), self.scale)}
        return sorted(eff.items(), key=lambda kv: -abs(kv[1]))[:k]

    def __str__(self) -> str:
        what = f"output {self.target}" + (f" ({self.target_name})" if self.target_name else "")
        head = (f"local {self.kind} surrogate of {what}: black box {fmt_number(self.model_score)}, "
                f"surrogate {fmt_number(self.surrogate_score)}, local fidelity R² {self.fidelity:.3f}")
        if self.rules is not None:
            return head + "\n" + str(self.rules)
        assert self.weights is not None
        lines = [f"  {n}: {fmt_number(v)}" for n, v in self.top(len(self.weights))]
        return head + "\nscore change per perturbation std:\n" + "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "kind": self.kind, "instance": self.instance.tolist(), "feature_names": self.feature_names,
            "target": self.target, "target_name": self.target_name, "model_score": self.model_score,
            "surrogate_score": self.surrogate_score, "fidelity": self.fidelity,
            "n_samples": self.n_samples, "kernel_width": self.kernel_width,
            "weights": self.weights, "intercept": self.intercept,
            "rules": None if self.rules is None else self.rules.to_dict(),
        }


def _scales(X: Any, x: np.ndarray, names: list[str], scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The perturbation std of each column and the reference rows' quartile borders."""
    if not scale > 0:
        raise OptionError(f"scale must be positive, got {scale!r}")
    if X is None:
        return np.full(x.shape[0], float(scale)), None
    Xa, _ = as_table(X, names, name="X")
    if Xa.shape[1] != x.shape[0]:
        raise InputError(f"X has {Xa.shape[1]} columns but the instance has {x.shape[0]}")
    sd = Xa.std(axis=0)
    sd[sd == 0] = 1.0
    return np.asarray(sd * float(scale), dtype=np.float64), quartile_borders(Xa)


def local_surrogate(
    model: Any, x: Any, *, X: Any = None, kind: Literal["linear", "tree"] = "linear",
    target: TargetSpec = "predicted", n_samples: int = 2000, scale: float = 0.5,
    kernel_width: float | None = None, alpha: float = 1e-3, max_depth: int = 3,
    feature_names: Sequence[str] | None = None, val_fraction: float = 0.25, seed: int = 0,
    batch_size: BatchSize = "auto",
) -> LocalSurrogate:
    """Fit a surrogate of the black box's ``target`` score around the instance ``x``.

    Parameters
    ----------
    x : (F,) or (1, F) — the instance.
    X : table, optional — reference rows whose column stds set the perturbation scale
        (default: unit std for every column).
    kind : "linear" (weighted ridge) or "tree" (weighted regression tree of ``max_depth``).
    target : class index or ``"predicted"`` (``None`` for one score per row). The score is the
        model's output as returned; wrap with ``uv.Model(net, output="probs")`` for probabilities.
    n_samples : perturbed rows; ``val_fraction`` of them only measure the local fidelity.
    scale : perturbation std in column stds; ``kernel_width`` defaults to ``sqrt(F)`` (in
        units of the perturbation std, so a typical row gets weight about ``exp(-1)``).
    alpha : ridge penalty on offsets measured in perturbation stds (unitless).
    max_depth : depth of the tree for ``kind="tree"``.
    """
    if kind not in ("linear", "tree"):
        raise OptionError(f"kind must be 'linear' or 'tree', got {kind!r}")
    m = wrap(model)
    if feature_names is None:  # the names of a DataFrame X, or of a pandas row x
        cols = getattr(X, "columns", None)
        row_index = getattr(x, "index", None)
        if cols is None and getattr(x, "ndim", 0) == 1 and row_index is not None and not callable(row_index):
            cols = row_index
        feature_names = None if cols is None else [str(c) for c in cols]
    xa, names = as_table(np.atleast_2d(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x),
                         feature_names, name="x")
    if xa.shape[0] != 1:
        raise InputError(f"x must be one instance (F,) or (1, F), got {xa.shape[0]} rows")
    x0 = xa[0]
    n = check_positive_int("n_samples", n_samples) or 0
    if n < 20:
        raise OptionError(f"n_samples must be at least 20, got {n_samples}")
    sd, borders = _scales(X, x0, names, scale)
    width = float(np.sqrt(x0.shape[0])) if kernel_width is None else float(kernel_width)
    if not width > 0:
        raise OptionError(f"kernel_width must be positive, got {kernel_width!r}")
    if not 0.0 < val_fraction < 1.0:
        raise OptionError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, x0.shape[0]))
    z[0] = 0.0  # the instance itself
    rows = x0 + z * sd
    xt = m.prepare(torch.from_numpy(rows))
    out = evaluate_rows(m, n, lambda a, b: xt[a:b], batch_size=batch_size, key=("local", x0.shape[0]))
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    tt = m.resolve_targets(target, out[:1])
    t = None if tt is None else int(tt[0])
    score = (out if out.ndim == 1 else out[:, t]).numpy()
    w = np.exp(-(z**2).sum(axis=1) / width**2)
    n_val = max(1, int(round(n * val_fraction)))
    perm = rng.permutation(np.arange(1, n))
    val, fit = perm[:n_val], np.concatenate([[0], perm[n_val:]])
    res = _fit_local(kind, rows, score, w, fit, val, x0, sd, alpha, max_depth, seed)
    res.feature_names, res.target, res.kernel_width, res.borders = names, t, width, borders
    classes = estimator_classes(m)
    if t is not None and classes is not None and t < len(classes):
        res.target_name = str(classes[t])
    _finish(res, rows, score, val)
    return res


def _fit_local(
    kind: str, rows: np.ndarray, score: np.ndarray, w: np.ndarray, fit: np.ndarray, val: np.ndarray,
    x0: np.ndarray, sd: np.ndarray, alpha: float, max_depth: int, seed: int,
) -> LocalSurrogate:
    """Weighted fit on the ``fit`` rows; weighted R² on the ``val`` rows."""
    from sklearn.metrics import r2_score

    if kind == "linear":
        from sklearn.linear_model import Ridge

        # offsets in perturbation stds (so alpha is unitless); the intercept is the score at x
        inputs = (rows - x0) / sd
        est: Any = Ridge(alpha=alpha).fit(inputs[fit], score[fit], sample_weight=w[fit])
    elif kind == "tree":
        from sklearn.tree import DecisionTreeRegressor

        check_positive_int("max_depth", max_depth)
        inputs = rows
        est = DecisionTreeRegressor(max_depth=max_depth, random_state=seed, min_samples_leaf=5)
        est.fit(inputs[fit], score[fit], sample_weight=w[fit])
    else:
        raise OptionError(f"kind must be 'linear' or 'tree', got {kind!r}")
    fid = float(r2_score(score[val], est.predict(inputs[val]), sample_weight=w[val]))
    s0 = float(est.predict(inputs[:1])[0])
    res = LocalSurrogate(kind, x0, [], None, float(score[0]), s0, fid, int(rows.shape[0]), sd, 0.0, est)
    return res


def _finish(res: LocalSurrogate, rows: np.ndarray, score: np.ndarray, val: np.ndarray) -> None:
    """Weights (linear) or rules scored on the held-out rows (tree), with the user's names."""
    est = res.estimator
    if res.kind == "linear":
        res.weights = {nm: float(c) for nm, c in zip(res.feature_names, est.coef_ / res.scale)}
        res.intercept = float(est.intercept_)
    else:
        tree = read_tree(est, res.feature_names, None, as_list=False)
        res.rules = score_rules(tree.rules, tree.rule_index(est.apply(rows[val])), score[val], False)
