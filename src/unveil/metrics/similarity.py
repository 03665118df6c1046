"""Similarity of two batches of attribution maps, row by row.

Used by the sanity checks (Adebayo et al., 2018, "Sanity Checks for Saliency Maps", NeurIPS) and
by the agreement between methods. Every function takes two batches (N, ...) of the same shape
(tensors or arrays) and returns one figure per row, a float64 tensor (N,).

The arithmetic runs in numpy on the CPU: the maps are small, and small ops run faster on one
thread than split across cores that other work keeps busy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import InputError, OptionError

__all__ = [
    "hog_features",
    "hog_similarity",
    "pearson",
    "rankdata",
    "spearman",
    "ssim",
    "top_k_intersection",
]


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _out(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _np(a), _np(b)
    if x.shape != y.shape or x.ndim < 2:
        raise InputError(
            f"maps to compare must be two batches (N, ...) of the same shape, got "
            f"{x.shape} and {y.shape}"
        )
    return x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks 0..D-1 along axis 1 (ties share their mean rank)."""
    n, d = v.shape
    order = np.argsort(v, axis=1, kind="stable")
    s = np.take_along_axis(v, order, 1)
    new = np.ones((n, d), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = np.cumsum(new, axis=1) - 1 + np.arange(n)[:, None] * d
    pos = np.broadcast_to(np.arange(d, dtype=np.float64), (n, d))
    total = np.bincount(gid.ravel(), weights=pos.ravel(), minlength=n * d)
    count = np.bincount(gid.ravel(), minlength=n * d)
    avg = total[gid] / count[gid]
    out: np.ndarray = np.empty_like(avg)
    np.put_along_axis(out, order, avg, 1)
    return out


def rankdata(v: Any) -> torch.Tensor:
    """Ranks 0..D-1 along axis 1 of (N, D), ties sharing their average rank (as
    ``scipy.stats.rankdata(method="average") - 1``)."""
    return _out(_ranks(_np(v)))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip((x * y).sum(1) / den, -1.0, 1.0)
    return np.where(den > 0, r, np.nan)


def pearson(a: Any, b: Any) -> torch.Tensor:
    """Pearson correlation per row; NaN where a row is constant."""
    return _out(_pearson(*_pair(a, b)))


def spearman(a: Any, b: Any, *, absolute: bool = False) -> torch.Tensor:
    """Spearman rank correlation per row (of ``|a|`` and ``|b|`` when ``absolute``); NaN where
    a row is constant. Ties get average ranks, as in ``scipy.stats.spearmanr``."""
    x, y = _pair(a, b)
    if absolute:
        x, y = np.abs(x), np.abs(y)
    return _out(_pearson(_ranks(x), _ranks(y)))


def top_k_intersection(a: Any, b: Any, k: int | float = 0.1, *, absolute: bool = True) -> torch.Tensor:
    """Share of the ``k`` highest-scoring features of ``a`` that are also among the ``k``
    highest of ``b`` (``k`` a count, or a fraction of the features when below 1)."""
    x, y = _pair(a, b)
    if absolute:
        x, y = np.abs(x), np.abs(y)
    d = x.shape[1]
    kk = int(round(k * d)) if isinstance(k, float) and k < 1 else int(k)
    if kk < 1 or kk > d:
        raise OptionError(f"k must select between 1 and {d} features, got {k!r}")
    ta = np.zeros(x.shape, dtype=bool)
    tb = np.zeros(y.shape, dtype=bool)
    np.put_along_axis(ta, np.argsort(-x, axis=1, kind="stable")[:, :kk], True, 1)
    np.put_along_axis(tb, np.argsort(-y, axis=1, kind="stable")[:, :kk], True, 1)
    return _out((ta & tb).sum(1) / kk)


def _maps2d(a: Any) -> np.ndarray:
    """(N, H, W) from (N, H, W) or (N, C, H, W) maps (channels summed)."""
    m = _np(a)
    if m.ndim == 4:
        m = m.sum(1)
    if m.ndim != 3:
        raise InputError(f"image similarities need (N, H, W) or (N, C, H, W) maps, got {m.shape}")
    return m


def _unit_range(a: np.ndarray) -> np.ndarray:
    lo = a.min(axis=(1, 2), keepdims=True)
    hi = a.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.0)


def _box_mean(t: np.ndarray, win: int) -> np.ndarray:
    """Means over every ``win`` x ``win`` window that fits inside (N, H, W) maps."""
    c = np.zeros((t.shape[0], t.shape[1] + 1, t.shape[2] + 1))
    c[:, 1:, 1:] = t.cumsum(1).cumsum(2)
    s = c[:, win:, win:] - c[:, :-win, win:] - c[:, win:, :-win] + c[:, :-win, :-win]
    return s / (win * win)


def ssim(a: Any, b: Any, *, win_size: int = 7, normalize: bool = True,
         absolute: bool = True) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004) of two batches of maps, one figure per row.

    Maps are summed over channels, taken in absolute value (``absolute``) and scaled to [0, 1]
    per map (``normalize``), then compared with a ``win_size`` square uniform window, sample
    covariances and ``K1=0.01, K2=0.03, data_range=1`` — the conventions of
    ``skimage.metrics.structural_similarity``, averaged over the windows that fit inside.
    """
    x, y = _maps2d(a), _maps2d(b)
    if x.shape != y.shape:
        raise InputError(f"maps to compare must have the same shape, got {x.shape} and {y.shape}")
    if absolute:
        x, y = np.abs(x), np.abs(y)
    if normalize:
        x, y = _unit_range(x), _unit_range(y)
    h, w = x.shape[-2:]
    win = min(win_size, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise InputError(f"maps of {h}x{w} are too small for SSIM (need at least 3x3)")
    cov = win * win / (win * win - 1)
    ux, uy = _box_mean(x, win), _box_mean(y, win)
    vx = cov * (_box_mean(x * x, win) - ux * ux)
    vy = cov * (_box_mean(y * y, win) - uy * uy)
    vxy = cov * (_box_mean(x * y, win) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _out(s.reshape(s.shape[0], -1).mean(1))


def _hog(x: np.ndarray, orientations: int, pixels_per_cell: int | None, cells_per_block: int) -> np.ndarray:
    n, h, w = x.shape
    c = pixels_per_cell or (8 if min(h, w) >= 32 else max(2, min(h, w) // 4))
    nr, nc, b = h // c, w // c, cells_per_block
    if nr < b or nc < b:
        raise InputError(f"maps of {h}x{w} are too small for HOG with {c}-pixel cells and "
                         f"{b}-cell blocks")
    gr, gc = np.zeros_like(x), np.zeros_like(x)
    gr[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    gc[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    mag = np.hypot(gr, gc)[:, : nr * c, : nc * c]
    ang = np.rad2deg(np.arctan2(gr, gc)) % 180.0
    bins = np.clip(np.floor(ang / (180.0 / orientations)).astype(np.int64), 0, orientations - 1)
    bins = bins[:, : nr * c, : nc * c]
    # flat index of (sample, cell row, cell column, bin) for every pixel: one weighted bincount
    rows = (np.arange(nr * c) // c)[None, :, None]
    cols = (np.arange(nc * c) // c)[None, None, :]
    idx = ((np.arange(n)[:, None, None] * nr + rows) * nc + cols) * orientations + bins
    hist = np.bincount(idx.ravel(), weights=mag.ravel(), minlength=n * nr * nc * orientations)
    hist = hist.reshape(n, nr, nc, orientations) / (c * c)
    blocks = sliding_window_view(hist, (b, b), axis=(1, 2))  # (N, br, bc, O, b, b)
    blocks = blocks.transpose(0, 1, 2, 4, 5, 3).reshape(n, nr - b + 1, nc - b + 1, -1)
    eps = 1e-5
    out = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + eps**2)
    out = np.minimum(out, 0.2)
    out = out / np.sqrt((out**2).sum(-1, keepdims=True) + eps**2)
    feats: np.ndarray = out.reshape(n, -1)
    return feats


def hog_features(a: Any, *, orientations: int = 9, pixels_per_cell: int | None = None,
                 cells_per_block: int = 2) -> torch.Tensor:
    """Histogram-of-oriented-gradients features (Dalal & Triggs, 2005) of (N, H, W) maps.

    Follows ``skimage.feature.hog`` with ``block_norm="L2-Hys"``: central-difference gradients
    (zero on the border), unsigned orientations hard-binned into ``orientations`` bins, cell
    histograms of gradient magnitude divided by the cell area, and blocks of
    ``cells_per_block`` cells (stride one cell) normalised. ``pixels_per_cell`` defaults to 8,
    or a quarter of the shorter side for maps under 32 pixels. Returns (N, n_features).
    """
    return _out(_hog(_maps2d(a), orientations, pixels_per_cell, cells_per_block))


def hog_similarity(a: Any, b: Any, *, absolute: bool = True, orientations: int = 9,
                   pixels_per_cell: int | None = None, cells_per_block: int = 2) -> torch.Tensor:
    """Pearson correlation of the HOG features of two batches of maps (Adebayo et al., 2018),
    each map taken in absolute value (``absolute``) and scaled to [0, 1] first."""
    x, y = _maps2d(a), _maps2d(b)
    if absolute:
        x, y = np.abs(x), np.abs(y)
    opts = (orientations, pixels_per_cell, cells_per_block)
    return _out(_pearson(_hog(_unit_range(x), *opts), _hog(_unit_range(y), *opts)))
