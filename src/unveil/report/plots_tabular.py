"""Plots of table explanations that SHAP users already read: a waterfall for one row, a
beeswarm summary over many rows and a dependence plot of one column.

Each plot has a computing half (:func:`waterfall_steps`, :func:`beeswarm_layout`) that returns
plain numbers in a small display object whose ``.plot(ax=None)`` draws them and returns the
Axes; ``plot_*`` do both. None calls ``plt.show()``. Colours follow the report: red pushes the explained output up, blue down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..errors import InputError
from ._mpl import NEG_HEX, POS_HEX, check_index, fmt, new_axes, pyplot, signed
from .render import feature_table

__all__ = [
    "Beeswarm",
    "Waterfall",
    "beeswarm_layout",
    "plot_beeswarm",
    "plot_dependence",
    "plot_waterfall",
    "swarm_offsets",
    "waterfall_steps",
]


@dataclass
class Waterfall:
    """The steps of a waterfall, top row first (largest ``|contribution|``).

    ``starts[k]`` is where bar ``k`` begins; the path runs from ``base`` at the bottom row up to
    ``end = base + sum(contributions)`` at the end of the top bar. ``output`` is the model's
    ``f(x)`` when the explanation recorded it (``end`` equals it when completeness holds).
    """

    labels: list[str]
    contributions: np.ndarray
    base: float
    base_name: str
    output: float | None
    xlabel: str = "model output"

    @property
    def starts(self) -> np.ndarray:
        """Left end of each bar's path (before its contribution), top row first."""
        rev = self.contributions[::-1]
        return np.asarray((self.base + np.cumsum(rev) - rev)[::-1], dtype=np.float64)

    @property
    def end(self) -> float:
        """Where the path ends: the base plus every contribution."""
        return float(self.base + self.contributions.sum())

    def plot(self, ax: Any = None, *, title: str | None = None) -> Any:
        """Draw these steps (see :func:`plot_waterfall`); returns the matplotlib Axes."""
        return _draw_waterfall(self, ax, title)


def _label(name: str, value: float) -> str:
    return name if not np.isfinite(value) else f"{name} = {fmt(value)}"


def _base_name(exp: Explanation) -> str:
    """How the base value was measured: over a background set or at one baseline."""
    bg = any("background" in k and v is not None for k, v in exp.params.items())
    return "E[f(background)]" if bg else "f(baseline)"


def waterfall_steps(exp: Explanation, index: int = 0, *, top_k: int = 10) -> Waterfall:
    """The steps of row ``index``: the ``top_k`` rows of the plot, the largest ``|attribution|``
    features first and, when there are more features than ``top_k``, the remaining ones summed
    into a last row ``"N other features"``.

    The base value is ``exp.baseline_outputs`` (``f(baseline)``, or ``E[f(background)]`` for
    methods averaging over a background); without it (LIME, for one), ``f(x) - sum(values)``
    when ``f(x)`` is known, and says so, else 0. Labels read ``name = value`` with the input's value in its own units.
    """
    i = check_index(exp, index)
    if top_k < 2:
        raise InputError(f"top_k must be at least 2 (a feature and the rest), got {top_k}")
    rows = feature_table(exp, i, top_k=None)
    contrib = np.array([r.attribution for r in rows], dtype=np.float64)
    labels = [_label(r.name, r.value) for r in rows]
    if len(rows) > top_k:
        keep = top_k - 1
        labels = [*labels[:keep], f"{len(rows) - keep} other features"]
        contrib = np.append(contrib[:keep], contrib[keep:].sum())
    output = None if exp.outputs is None else float(np.asarray(exp.outputs)[i])
    if exp.baseline_outputs is not None:
        base, name = float(np.asarray(exp.baseline_outputs)[i]), _base_name(exp)
    elif output is not None:
        base, name = output - float(contrib.sum()), "f(x) \u2212 sum of attributions"
    else:
        base, name = 0.0, "base"
    return Waterfall(labels, contrib, base, name, output, "model output" + _target_text(exp, i))


def plot_waterfall(exp: Explanation, index: int = 0, ax: Any = None, *, top_k: int = 10,
                   title: str | None = None) -> Any:
    """SHAP's waterfall for row ``index``: from the base value at the bottom, each feature's
    contribution as a bar (red up, blue down; largest on top) ending at ``f(x)``.

    The base value and ``f(x)`` are written at the two ends of the path; when the attributions
    do not add up to ``f(x) - base`` (a method without completeness), the gap is written too.
    Returns the matplotlib Axes.
    """
    return waterfall_steps(exp, index, top_k=top_k).plot(ax, title=title)


def _draw_waterfall(w: Waterfall, ax: Any, title: str | None) -> Any:
    n = len(w.labels)
    ax = new_axes(ax, (6.5, 0.45 * n + 1.6))
    y = np.arange(n)[::-1].astype(np.float64)
    starts, c = w.starts, w.contributions
    colours = [POS_HEX if v >= 0 else NEG_HEX for v in c]
    ax.barh(y, c, left=starts, color=colours, height=0.7)
    span = float(max(np.max(starts + np.maximum(c, 0)), w.base, w.end)
                 - min(np.min(starts + np.minimum(c, 0)), w.base, w.end)) or 1.0
    for yk, s, v in zip(y, starts, c):
        right = s + max(v, 0.0)
        ax.text(right + 0.01 * span, yk, signed(float(v)), va="center", ha="left", fontsize=9)
    for k in range(n - 1):  # thin connectors: the end of a bar is the start of the one above
        ax.plot([starts[k], starts[k]], [y[k] - 0.35, y[k + 1] + 0.35], color="0.55", lw=0.7)
    ax.axvline(w.base, color="0.45", lw=0.8, ls="--", zorder=0)
    fx = w.end if w.output is None else w.output
    ax.axvline(fx, color="0.2", lw=0.8, ls="--", zorder=0)
    gap = 0.0 if w.output is None else w.output - w.end
    if abs(gap) > 1e-3 * max(float(np.abs(c).sum()), 1e-12):
        ax.text(w.end, n - 0.55, f"attributions end at {fmt(w.end)} (gap {signed(gap)})",
                ha="center", va="center", fontsize=8, color="0.3")
    ax.set_yticks(y)
    ax.set_yticklabels(w.labels)
    ax.set_ylim(-1.6, n + 0.5)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo - 0.04 * span, hi + 0.12 * span)  # room for the value texts
    lo, hi = ax.get_xlim()

    def align(v: float) -> str:  # a text at the left of the plot reads rightwards, and back
        return "left" if v < lo + 0.3 * (hi - lo) else "right" if v > lo + 0.7 * (hi - lo) else "center"

    ax.text(w.base, -1.0, f" {w.base_name} = {fmt(w.base)} ", ha=align(w.base), va="center", fontsize=9)
    ax.text(fx, n, f" f(x) = {fmt(fx)} ", ha=align(fx), va="center", fontsize=9, fontweight="bold")
    ax.set_xlabel(w.xlabel)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title is not None:
        ax.set_title(title)
    return ax


def _target_text(exp: Explanation, i: int) -> str:
    if exp.targets is None:
        return ""
    k = int(np.asarray(exp.targets)[i])
    names = exp.class_names
    return f" ({names[k] if names is not None and 0 <= k < len(names) else f'class {k}'})"


# -- many rows -------------------------------------------------------------------------------
def _table(exp: Explanation) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Attributions and inputs (N, F) of a table explanation, float64, and the column names."""
    v = np.asarray(exp.values, dtype=np.float64)
    x = np.asarray(exp.inputs, dtype=np.float64)
    if v.ndim != 2 or v.shape != x.shape:
        raise InputError(f"this plot needs one attribution per column of a table (N, F); got values "
                         f"{v.shape} for inputs {x.shape}")
    names = exp.feature_names
    cols = [str(s) for s in names] if names is not None and len(names) == x.shape[1] else [
        f"feature {j}" for j in range(x.shape[1])]
    return v, x, cols


def _column(feature: int | str, names: list[str]) -> int:
    if isinstance(feature, str):
        if feature not in names:
            from ..core.options import suggest

            raise InputError(f"no column named {feature!r}.{suggest(feature, names)}")
        return names.index(feature)
    j = int(feature)
    if not -len(names) <= j < len(names):
        raise InputError(f"column {j} is out of range for a table of {len(names)} columns")
    return j % len(names)


def swarm_offsets(x: np.ndarray, *, bins: int = 80, width: float = 0.4) -> np.ndarray:
    """Vertical offsets that spread points with close ``x`` into a swarm (within ``±width``):
    points are binned along ``x`` and stacked alternately above and below the row."""
    n = x.size
    if n == 0:
        return np.zeros(0)
    lo, hi = float(np.min(x)), float(np.max(x))
    b = np.clip(((x - lo) / ((hi - lo) or 1.0) * bins).astype(np.int64), 0, bins - 1)
    order = np.lexsort((x, b))
    sb = b[order]
    first = np.searchsorted(sb, sb, side="left")
    rank = np.arange(n) - first
    off = np.where(rank % 2 == 1, (rank + 1) // 2, -(rank // 2)).astype(np.float64)
    out = np.empty(n)
    out[order] = off
    m = float(np.abs(out).max())
    return out * (width / m) if m > 0 else out


def _unit_colour(x: np.ndarray) -> np.ndarray:
    """A column's values mapped to [0, 1] between its 5th and 95th percentiles (as SHAP)."""
    ok = np.isfinite(x)
    if not ok.any():
        return np.full(x.shape, np.nan)
    lo, hi = np.percentile(x[ok], [5, 95])
    if hi <= lo:
        lo, hi = float(np.min(x[ok])), float(np.max(x[ok]))
    return np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.full(x.shape, 0.5)


@dataclass
class Beeswarm:
    """Rows of a beeswarm, top row first: column, name, attributions, offsets, colour in [0, 1]."""

    columns: list[int]
    names: list[str]
    values: list[np.ndarray]
    offsets: list[np.ndarray]
    colour: list[np.ndarray]
    other: int  # columns left out (their rows are not drawn)

    def plot(self, ax: Any = None, *, cmap: str = "coolwarm", title: str | None = None) -> Any:
        """Draw this layout (see :func:`plot_beeswarm`); returns the matplotlib Axes."""
        return _draw_beeswarm(self, ax, cmap, title)


def beeswarm_layout(exp: Explanation, *, max_display: int = 12) -> Beeswarm:
    """The columns ordered by mean ``|attribution|`` (largest first), up to ``max_display``, with
    each row's swarm offsets and colour (the column's value scaled to [0, 1])."""
    v, x, names = _table(exp)
    order = np.argsort(-np.abs(v).mean(axis=0), kind="stable")
    keep = [int(j) for j in order[:max_display]]
    return Beeswarm(keep, [names[j] for j in keep], [v[:, j] for j in keep],
                    [swarm_offsets(v[:, j]) for j in keep], [_unit_colour(x[:, j]) for j in keep],
                    len(names) - len(keep))


def plot_beeswarm(exp: Explanation, ax: Any = None, *, max_display: int = 12, cmap: str = "coolwarm",
                  title: str | None = None) -> Any:
    """SHAP's beeswarm summary over every row: one row per column (largest mean ``|attribution|``
    on top), one dot per explained row at its attribution, coloured by the column's value (low
    to high, colour bar beside). Returns the matplotlib Axes."""
    return beeswarm_layout(exp, max_display=max_display).plot(ax, cmap=cmap, title=title)


def _draw_beeswarm(lay: Beeswarm, ax: Any, cmap: str, title: str | None) -> Any:
    n = len(lay.columns)
    ax = new_axes(ax, (6.5, 0.4 * n + 1.4))
    plt = pyplot()
    cm = plt.get_cmap(cmap)
    for k in range(n):
        yk = n - 1 - k
        c = lay.colour[k]
        nan = ~np.isfinite(c)
        ax.scatter(lay.values[k][~nan], yk + lay.offsets[k][~nan], c=c[~nan], cmap=cm, vmin=0, vmax=1,
                   s=12, linewidths=0, alpha=0.9, zorder=3)
        if nan.any():
            ax.scatter(lay.values[k][nan], yk + lay.offsets[k][nan], color="0.6", s=12, zorder=2)
    ax.axvline(0.0, color="0.5", lw=0.8, zorder=1)
    ax.set_yticks(np.arange(n)[::-1])
    ax.set_yticklabels(lay.names)
    ax.set_ylim(-0.7, n - 0.3)
    more = f"{lay.other} column{'s' if lay.other > 1 else ''}"
    ax.set_xlabel("attribution" + (f" ({more} with smaller mean |attribution| not shown)" if lay.other else ""))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    sm = plt.cm.ScalarMappable(cmap=cm, norm=plt.Normalize(0, 1))
    cb = ax.figure.colorbar(sm, ax=ax, ticks=[0, 1], aspect=30, pad=0.02)
    cb.ax.set_yticklabels(["low", "high"])
    cb.set_label("feature value")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_dependence(exp: Explanation, feature: int | str, ax: Any = None, *,
                    color_by: int | str | None = None, cmap: str = "coolwarm",
                    title: str | None = None) -> Any:
    """A column's attribution against its value over every row (SHAP's dependence plot),
    coloured by another column's value when ``color_by`` names one. Returns the Axes."""
    v, x, names = _table(exp)
    j = _column(feature, names)
    ax = new_axes(ax, (5.5, 3.8))
    if color_by is None:
        ax.scatter(x[:, j], v[:, j], color=POS_HEX, s=14, linewidths=0, alpha=0.85)
    else:
        k = _column(color_by, names)
        sc = ax.scatter(x[:, j], v[:, j], c=x[:, k], cmap=cmap, s=14, linewidths=0, alpha=0.9)
        cb = ax.figure.colorbar(sc, ax=ax, pad=0.02)
        cb.set_label(names[k])
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlabel(names[j])
    ax.set_ylabel(f"attribution of {names[j]}")
    if title is not None:
        ax.set_title(title)
    return ax
