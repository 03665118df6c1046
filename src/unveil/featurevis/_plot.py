"""Drawing for feature-visualization results; matplotlib is imported only when called."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import require

__all__ = ["axes", "montage", "plot_inputs"]


def axes(ax: Any) -> Any:
    """``ax`` or a fresh Axes (matplotlib from the ``viz`` extra)."""
    if ax is not None:
        return ax
    plt: Any = require("matplotlib.pyplot", "viz")
    _, new = plt.subplots()
    return new


def _to_unit(img: np.ndarray, low: np.ndarray | None, high: np.ndarray | None) -> np.ndarray:
    if low is not None and high is not None:
        out = (img - low) / np.maximum(high - low, 1e-12)
    else:
        lo, hi = float(img.min()), float(img.max())
        out = (img - lo) / max(hi - lo, 1e-12)
    clipped: np.ndarray = np.clip(out, 0.0, 1.0)
    return clipped


def montage(images: Sequence[np.ndarray], *, gap: int = 2) -> np.ndarray:
    """Images (C, H, W) of possibly different sizes side by side, as (H, W) or (H, W, 3)."""
    hs = max(i.shape[-2] for i in images)
    rgb = images[0].shape[0] == 3
    cols = []
    for im in images:
        im = np.transpose(im, (1, 2, 0)) if rgb else im.mean(0)
        padded = np.ones((hs, im.shape[1], *im.shape[2:]))
        padded[: im.shape[0]] = im
        cols.append(padded)
        cols.append(np.ones((hs, gap, *im.shape[2:])))
    return np.concatenate(cols[:-1], axis=1)


def plot_inputs(images: np.ndarray, bounds: Any = None, *, ax: Any = None, title: str = "") -> Any:
    """Images (N, C, H, W) as a row, or rows (N, F) as lines of value per feature."""
    ax = axes(ax)
    low, high = (None, None) if bounds is None else (bounds[0][0], bounds[1][0])
    if images.ndim == 4:
        unit = [_to_unit(im, low, high) for im in images]
        pic = montage(unit)
        ax.imshow(pic, cmap=None if pic.ndim == 3 else "gray", vmin=0.0, vmax=1.0)
        ax.set_axis_off()
    else:
        flat = images.reshape(images.shape[0], -1)
        for k, row in enumerate(flat):
            ax.plot(row, marker=".", label=f"input {k}")
        ax.set_xlabel("feature")
        ax.set_ylabel("value")
        if len(flat) > 1:
            ax.legend()
    if title:
        ax.set_title(title)
    return ax
