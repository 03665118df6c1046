"""Matplotlib drawings of an :class:`~unveil.Explanation`: a heatmap over images, bars for
tables, coloured tokens for text, a coloured signal for sequences. Each function takes ``ax=None``
and returns the Axes; none calls ``plt.show()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..errors import require
from .narrative import display_name
from .render import (
    _heat2d,
    colour_map,
    display_kind,
    element_values,
    feature_table,
    image_rgb,
    robust_scale,
    token_values,
)

__all__ = ["plot_explanation"]


def _axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    require("matplotlib", "viz")
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _check_index(exp: Explanation, index: int) -> int:
    from ..errors import InputError

    n = len(exp)
    if not -n <= index < n:
        raise InputError(f"index {index} is out of range for an explanation of {n} samples")
    return index % n


def plot_explanation(
    exp: Explanation,
    index: int = 0,
    ax: Any = None,
    *,
    top_k: int = 12,
    alpha: float = 0.6,
    cmap: str = "bwr",
    title: str | None = None,
    overlay: bool = True,
) -> Any:
    """Draw sample ``index`` of ``exp`` and return the matplotlib Axes.

    Parameters
    ----------
    exp : Explanation
        Any explanation; the drawing follows its inputs (images, tables, token ids, signals).
    index : int
        Which sample of the batch.
    ax : matplotlib Axes, optional
        Where to draw (a new figure otherwise).
    top_k : int
        Bars drawn for tables (largest ``|attribution|`` first).
    alpha, cmap, overlay
        Opacity and colour map of the image heatmap, and whether it is drawn over the image.
    title : str, optional
        Axes title (default: the method's name and the explained class).
    """
    i = _check_index(exp, index)
    kind = display_kind(exp)
    name = title if title is not None else display_name(exp.method) + _target_suffix(exp, i)
    if kind == "image":
        ax = _plot_image(exp, i, _axes(ax, (4.0, 4.0)), alpha=alpha, cmap=cmap, overlay=overlay)
    elif kind == "table":
        ax = _plot_table(exp, i, _axes(ax, (6.0, 0.35 * top_k + 1.0)), top_k=top_k)
    elif kind == "text":
        ax = _plot_tokens(exp, i, _axes(ax, (8.0, 2.0)))
    else:
        ax = _plot_sequence(exp, i, _axes(ax, (8.0, 2.5)), cmap=cmap)
    ax.set_title(name)
    return ax


def _target_suffix(exp: Explanation, i: int) -> str:
    if exp.targets is None:
        return ""
    k = int(exp.targets[i])
    names = exp.class_names
    return f" · {names[k] if names is not None and 0 <= k < len(names) else f'class {k}'}"


def _plot_image(exp: Explanation, i: int, ax: Any, *, alpha: float, cmap: str, overlay: bool) -> Any:
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


def _plot_table(exp: Explanation, i: int, ax: Any, *, top_k: int) -> Any:
    rows = feature_table(exp, i, top_k=top_k)[::-1]
    vals = np.array([r.attribution for r in rows])
    col, _ = colour_map(vals, 1.0)
    ax.barh(np.arange(len(rows)), vals, color=[tuple(c) for c in col])
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([r.name for r in rows])
    ax.axvline(0.0, color="0.4", lw=0.8)
    ax.set_xlabel("attribution")
    return ax


def _plot_tokens(exp: Explanation, i: int, ax: Any) -> Any:
    toks, v = token_values(exp, i)
    s = robust_scale(v)
    col, a = colour_map(np.asarray(v, dtype=np.float64), s)
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax.set_axis_off()
    x, y, line_h = 0.01, 0.9, 0.18
    for t, c, al in zip(toks, col, a):
        txt = ax.text(x, y, t, transform=ax.transAxes, fontsize=11, va="top",
                      bbox={"boxstyle": "round,pad=0.15", "fc": (*c, 0.75 * float(al)), "ec": "none"})
        bb = txt.get_window_extent(renderer=renderer).transformed(ax.transAxes.inverted())
        x += bb.width + 0.012
        if x > 0.97:
            x, y = 0.01, y - line_h
            txt.set_position((x, y))
            bb = txt.get_window_extent(renderer=renderer).transformed(ax.transAxes.inverted())
            x += bb.width + 0.012
    return ax


def _plot_sequence(exp: Explanation, i: int, ax: Any, *, cmap: str) -> Any:
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
