"""Matplotlib drawings of an :class:`~unveil.Explanation`, chosen by ``kind``: a heatmap over
images (or Captum-style heat maps and overlays, :mod:`.plots_image`), bars, a waterfall, a
beeswarm or a dependence plot for tables (:mod:`.plots_tabular`), highlighted words for text
(:mod:`.plots_text`), a coloured signal for sequences. Each function takes ``ax=None`` and
returns the Axes; none calls ``plt.show()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ._mpl import check_choice, new_axes
from ._mpl import check_index as _check_index
from .narrative import display_name
from .plots_image import plot_image_attribution
from .plots_tabular import plot_beeswarm, plot_dependence, plot_waterfall
from .plots_text import plot_text
from .render import (
    _heat2d,
    colour_map,
    display_kind,
    element_values,
    feature_table,
    image_rgb,
    robust_scale,
)

__all__ = ["KINDS", "plot_explanation"]


KINDS = {
    "image": ("heatmap", "blended", "overlay"),
    "table": ("bar", "waterfall", "beeswarm", "dependence"),
    "text": ("words",),
    "sequence": ("signal",),
}
_IMAGE_OPTIONS = ("sign", "outlier_perc", "colorbar")


def plot_explanation(exp: Explanation, index: int = 0, ax: Any = None, *, kind: str | None = None,
                     title: str | None = None, **options: Any) -> Any:
    """Draw ``exp`` and return the matplotlib Axes (none of these calls ``plt.show()``).

    Parameters
    ----------
    exp : Explanation
        Any explanation; the drawing follows its inputs (images, tables, token ids, signals).
    index : int
        Which sample of the batch (plots of one sample).
    ax : matplotlib Axes, optional
        Where to draw (a new figure otherwise).
    kind : str, optional
        Images: ``"heatmap"``, ``"blended"`` or ``"overlay"``
        (:func:`~unveil.report.plot_image_attribution`, with ``sign=``, ``alpha=``, ``cmap=``,
        ``outlier_perc=``); by default the map over the grey image (``alpha=0.6``,
        ``cmap="bwr"``, ``overlay=True``), or ``"blended"`` when ``sign=`` is given.
        Tables: ``"bar"`` (default; ``top_k=12``), ``"waterfall"``
        (:func:`~unveil.report.plot_waterfall`), ``"beeswarm"`` (every row;
        :func:`~unveil.report.plot_beeswarm`), ``"dependence"`` (every row; ``feature=``,
        ``color_by=``; :func:`~unveil.report.plot_dependence`). Text: ``"words"`` (default;
        :func:`~unveil.report.plot_text`). Sequences: ``"signal"``.
    title : str, optional
        Axes title (default: the method's name and the explained class).
    **options
        Passed to the drawing of that kind.
    """
    i = _check_index(exp, index)
    what = display_kind(exp)
    if kind is None:
        kind = "blended" if what == "image" and any(k in options for k in _IMAGE_OPTIONS) else None
    if kind is not None:
        check_choice("kind", kind, KINDS[what])
    if kind in ("beeswarm", "dependence"):
        ax = plot_beeswarm(exp, ax, **options) if kind == "beeswarm" else plot_dependence(exp, ax=ax, **options)
        ax.set_title(title if title is not None else display_name(exp.method))
        return ax
    if kind == "waterfall":
        ax = plot_waterfall(exp, i, ax, **options)
    elif kind in KINDS["image"]:
        ax = plot_image_attribution(exp, i, ax, kind=kind, **options)
    elif what == "image":
        ax = _plot_image(exp, i, **options, ax=ax)
    elif what == "table":
        ax = _plot_table(exp, i, ax, **options)
    elif what == "text":
        ax = plot_text(exp, i, ax, **options)
    else:
        ax = _plot_sequence(exp, i, ax, **options)
    ax.set_title(title if title is not None else display_name(exp.method) + _target_suffix(exp, i))
    return ax


def _target_suffix(exp: Explanation, i: int) -> str:
    if exp.targets is None:
        return ""
    k = int(exp.targets[i])
    names = exp.class_names
    return f" · {names[k] if names is not None and 0 <= k < len(names) else f'class {k}'}"


def _plot_image(exp: Explanation, i: int, ax: Any, *, alpha: float = 0.6, cmap: str = "bwr",
                overlay: bool = True) -> Any:
    ax = new_axes(ax, (4.0, 4.0))
    x = np.asarray(exp.inputs[i])
    if x.ndim == 2:
        x = x[None]
    img = image_rgb(x)
    heat = _heat2d(element_values(exp)[i], img.shape[:2])
    s = robust_scale(heat)
    if overlay:
        ax.imshow(img.mean(2) if x.shape[0] != 3 else img, cmap="gray", interpolation="nearest")
    ax.imshow(heat, cmap=cmap, vmin=-s, vmax=s, alpha=alpha if overlay else 1.0,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _plot_table(exp: Explanation, i: int, ax: Any, *, top_k: int = 12) -> Any:
    ax = new_axes(ax, (6.0, 0.35 * top_k + 1.0))
    rows = feature_table(exp, i, top_k=top_k)[::-1]
    vals = np.array([r.attribution for r in rows])
    col, _ = colour_map(vals, 1.0)
    ax.barh(np.arange(len(rows)), vals, color=[tuple(c) for c in col])
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([r.name for r in rows])
    ax.axvline(0.0, color="0.4", lw=0.8)
    ax.set_xlabel("attribution")
    return ax


def _plot_sequence(exp: Explanation, i: int, ax: Any, *, cmap: str = "bwr") -> Any:
    ax = new_axes(ax, (8.0, 2.5))
    x = np.asarray(exp.inputs[i], dtype=np.float64)
    x2 = x.reshape(-1, x.shape[-1])
    v = element_values(exp)[i]
    v2 = v.reshape(x2.shape).sum(0) if v.size == x2.size else np.zeros(x2.shape[1])
    s = robust_scale(v2)
    lo, hi = float(x2.min()), float(x2.max())
    ax.imshow(v2[None], cmap=cmap, vmin=-s, vmax=s, aspect="auto", alpha=0.6,
              extent=(-0.5, x2.shape[1] - 0.5, lo, hi if hi > lo else lo + 1))
    for c in range(x2.shape[0]):
        ax.plot(np.arange(x2.shape[1]), x2[c], color="k", lw=1)
    ax.set_xlabel("position")
    return ax
