"""Plots of black-box summaries made by :mod:`unveil.surrogate`: partial dependence with ICE
curves (:func:`unveil.partial_dependence`) and a local linear surrogate's effects labelled with
LIME's quartile conditions (:func:`unveil.local_surrogate`). Each takes ``ax=None`` and returns
the Axes; the result objects' ``.plot()`` methods call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, OptionError
from ..surrogate.global_importance import PartialDependence
from ..surrogate.local import LocalSurrogate
from ._mpl import NEG_HEX, POS_HEX, check_choice, fmt, new_axes, pyplot, signed

__all__ = ["PD_KINDS", "ice_rows", "local_effects", "plot_local_surrogate", "plot_partial_dependence"]

PD_KINDS = ("both", "average", "individual")


def _curves(pd: PartialDependence, output: int, centered: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (G,) average and (N, G) ICE curves of one output, centred at the first grid point."""
    avg, ind = np.asarray(pd.average, dtype=np.float64), np.asarray(pd.individual, dtype=np.float64)
    if avg.ndim == 2:
        if not 0 <= output < avg.shape[1]:
            raise InputError(f"output {output} is out of range for {avg.shape[1]} model outputs")
        avg, ind = avg[:, output], ind[..., output]
    if centered:
        ind = ind - ind[:, :1]
        avg = ind.mean(axis=0)
    return avg, ind


def ice_rows(n: int, ice: int) -> np.ndarray:
    """Which of ``n`` rows get an ICE curve: all when ``n <= ice``, else ``ice`` rows evenly
    spread over the data (not the first ones, which are often sorted by class)."""
    if n <= ice:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, ice).round().astype(np.int64))


def _pd_one(pd: PartialDependence, ax: Any, kind: str, centered: bool, ice: int, output: int) -> Any:
    avg, ind = _curves(pd, output, centered)
    if kind != "average" and ice > 0:
        shown = ind[ice_rows(len(ind), ice)]
        lines = ax.plot(pd.grid, shown.T, color="0.65", lw=0.6, alpha=0.8)
        lines[0].set_label(f"ICE ({len(shown)} of {len(ind)} rows)")
    if kind != "individual":
        ax.plot(pd.grid, avg, color=POS_HEX, lw=2.2, label="partial dependence (mean)")
    ax.set_xlabel(pd.feature)
    out = "" if np.asarray(pd.average).ndim == 1 else f" {output}"
    ax.set_ylabel(f"model output{out}" + (f" minus its value at {fmt(float(pd.grid[0]))}" if centered else ""))
    ax.legend(fontsize=8, loc="best")
    return ax


def plot_partial_dependence(
    result: PartialDependence | Sequence[PartialDependence], ax: Any = None, *, kind: str = "both",
    centered: bool = False, ice: int = 50, output: int = 0,
) -> Any:
    """Partial dependence (the mean over rows, bold) over individual conditional expectation
    curves (one thin line per row, up to ``ice`` of them).

    Parameters
    ----------
    result : PartialDependence or a list of them (what :func:`unveil.partial_dependence`
        returns); a list is drawn one panel per feature, sharing the output axis.
    ax : Axes, or one Axes per feature for a list; new ones otherwise.
    kind : ``"both"``, ``"average"`` (PDP only) or ``"individual"`` (ICE only).
    centered : draw c-ICE: every curve minus its value at the first grid point.
    output : which model output, when the result kept several.

    Returns
    -------
    The Axes, or a list of Axes for a list.
    """
    check_choice("kind", kind, PD_KINDS)
    if isinstance(result, PartialDependence):
        return _pd_one(result, new_axes(ax, (5.0, 3.6)), kind, centered, ice, output)
    items = list(result)
    if not items or not all(isinstance(r, PartialDependence) for r in items):
        raise InputError("plot_partial_dependence takes a PartialDependence or a non-empty list of them")
    if ax is None:
        _, axs = pyplot().subplots(1, len(items), figsize=(4.2 * len(items), 3.6), sharey=True,
                                   layout="constrained", squeeze=False)
        axes = list(axs[0])
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != len(items):
            raise InputError(f"ax must hold one Axes per feature: {len(items)} features, {len(axes)} Axes")
    return [_pd_one(r, a, kind, centered, ice, output) for r, a in zip(items, axes)]


def local_effects(sur: LocalSurrogate, *, top_k: int | None = 10) -> list[tuple[str, float]]:
    """(condition, effect) of a linear local surrogate, largest ``|effect|`` first: the effect
    is the score change for one perturbation std of the column (``weight * scale``, as
    :meth:`LocalSurrogate.top`), the condition the instance's quartile
    (:meth:`LocalSurrogate.conditions`)."""
    if sur.weights is None:
        raise OptionError("a tree local surrogate has rules, not weights: print(sur.rules) reads them")
    eff = np.array([sur.weights[n] for n in sur.feature_names], dtype=np.float64) * np.asarray(sur.scale)
    cond = sur.conditions()
    order = np.argsort(-np.abs(eff), kind="stable")[: top_k or None]
    return [(cond[j], float(eff[j])) for j in order]


def plot_local_surrogate(sur: LocalSurrogate, ax: Any = None, *, top_k: int = 10,
                         title: str | None = None) -> Any:
    """LIME's bar chart: a local linear surrogate's effects, largest on top, each bar labelled
    with the instance's condition in the columns' own units (``proline > 1035.00``); red
    raises the explained score, blue lowers it. Returns the matplotlib Axes."""
    rows = local_effects(sur, top_k=top_k)[::-1]
    ax = new_axes(ax, (7.0, 0.4 * len(rows) + 1.6))
    y = np.arange(len(rows))
    vals = np.array([v for _, v in rows])
    ax.barh(y, vals, color=[POS_HEX if v >= 0 else NEG_HEX for v in vals], height=0.7)
    span = float(np.abs(vals).max()) if vals.size else 1.0
    for yk, v in zip(y, vals):
        ax.text(v + (0.02 if v >= 0 else -0.02) * span, yk, signed(float(v)), va="center",
                ha="left" if v >= 0 else "right", fontsize=9)
    ax.set_yticks(y)
    ax.set_yticklabels([c for c, _ in rows])
    ax.axvline(0.0, color="0.4", lw=0.8)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo - 0.35 * span * (lo < 0), hi + 0.35 * span * (hi > 0))  # room for the values
    ax.set_xlabel("score change per perturbation std")
    what = "the score" if sur.target is None else f"output {sur.target}"
    what += f" ({sur.target_name})" if sur.target_name and sur.target_name != str(sur.target) else ""
    ax.set_title(title if title is not None else
                 f"local linear surrogate of {what}\nblack box {fmt(sur.model_score)} · surrogate "
                 f"{fmt(sur.surrogate_score)} · local R² {sur.fidelity:.2f}", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax
