"""Similarity of two batches of attribution maps, row by row, in torch.

Used by the sanity checks (Adebayo et al., 2018, "Sanity Checks for Saliency Maps", NeurIPS) and
by the agreement between methods. Every function takes two batches (N, ...) of the same shape and
returns one figure per row, (N,), float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.ndim < 2:
        raise InputError(
            f"maps to compare must be two batches (N, ...) of the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).to(a.device).double()


def rankdata(v: torch.Tensor) -> torch.Tensor:
    """Ranks 0..D-1 along axis 1 of (N, D), ties sharing their average rank (as
    ``scipy.stats.rankdata(method="average") - 1``)."""
    n, d = v.shape
    s, order = torch.sort(v, dim=1, stable=True)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = (new.cumsum(1) - 1) + torch.arange(n, device=v.device).view(-1, 1) * d
    pos = torch.arange(d, device=v.device, dtype=torch.float64).expand(n, d)
    total = torch.zeros(n * d, dtype=torch.float64, device=v.device).index_add_(0, gid.flatten(), pos.flatten())
    count = torch.zeros(n * d, dtype=torch.float64, device=v.device).index_add_(
        0, gid.flatten(), torch.ones(n * d, dtype=torch.float64, device=v.device))
    avg = (total / count.clamp(min=1))[gid]
    return torch.empty_like(avg).scatter_(1, order, avg)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row; NaN where a row is constant."""
    x, y = _pair(a, b)
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    den = torch.sqrt((x * x).sum(1) * (y * y).sum(1))
    r = (x * y).sum(1) / den
    return torch.where(den > 0, r.clamp(-1, 1), torch.full_like(r, math.nan))


def spearman(a: torch.Tensor, b: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """Spearman rank correlation per row (of ``|a|`` and ``|b|`` when ``absolute``); NaN where
    a row is constant. Ties get average ranks, as in ``scipy.stats.spearmanr``."""
    x, y = _pair(a, b)
    if absolute:
        x, y = x.abs(), y.abs()
    return pearson(rankdata(x), rankdata(y))


def top_k_intersection(a: torch.Tensor, b: torch.Tensor, k: int | float = 0.1, *,
                       absolute: bool = True) -> torch.Tensor:
    """Share of the ``k`` highest-scoring features of ``a`` that are also among the ``k``
    highest of ``b`` (``k`` a count, or a fraction of the features when below 1)."""
    x, y = _pair(a, b)
    if absolute:
        x, y = x.abs(), y.abs()
    d = x.shape[1]
    kk = int(round(k * d)) if isinstance(k, float) and k < 1 else int(k)
    if kk < 1 or kk > d:
        raise OptionError(f"k must select between 1 and {d} features, got {k!r}")
    ta = torch.zeros_like(x, dtype=torch.bool).scatter_(1, torch.topk(x, kk, dim=1).indices, True)
    tb = torch.zeros_like(y, dtype=torch.bool).scatter_(1, torch.topk(y, kk, dim=1).indices, True)
    return (ta & tb).sum(1).double() / kk


def _maps2d(a: torch.Tensor) -> torch.Tensor:
    """(N, H, W) from (N, H, W) or (N, C, H, W) maps (channels summed)."""
    a = torch.as_tensor(a).double()
    if a.ndim == 4:
        a = a.sum(1)
    if a.ndim != 3:
        raise InputError(f"image similarities need (N, H, W) or (N, C, H, W) maps, got {tuple(a.shape)}")
    return a


def _unit_range(a: torch.Tensor) -> torch.Tensor:
    lo = a.flatten(1).min(1).values.view(-1, 1, 1)
    hi = a.flatten(1).max(1).values.view(-1, 1, 1)
    return torch.where(hi > lo, (a - lo) / (hi - lo).clamp(min=1e-300), torch.zeros_like(a))


def ssim(a: torch.Tensor, b: torch.Tensor, *, win_size: int = 7, normalize: bool = True,
         absolute: bool = True) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004) of two batches of maps, one figure per row.

    Maps are summed over channels, taken in absolute value (``absolute``) and scaled to [0, 1]
    per map (``normalize``), then compared with a ``win_size`` square uniform window, sample
    covariances and ``K1=0.01, K2=0.03, data_range=1`` — the conventions of
    ``skimage.metrics.structural_similarity``, averaged over the windows that fit inside.
    """
    x, y = _maps2d(a), _maps2d(b).to(torch.as_tensor(a).device)
    if absolute:
        x, y = x.abs(), y.abs()
    if normalize:
        x, y = _unit_range(x), _unit_range(y)
    h, w = x.shape[-2:]
    win = min(win_size, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise InputError(f"maps of {h}x{w} are too small for SSIM (need at least 3x3)")

    def pool(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t.unsqueeze(1), win, stride=1).squeeze(1)

    cov = win * win / (win * win - 1)
    ux, uy = pool(x), pool(y)
    vx = cov * (pool(x * x) - ux * ux)
    vy = cov * (pool(y * y) - uy * uy)
    vxy = cov * (pool(x * y) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def hog_features(a: torch.Tensor, *, orientations: int = 9, pixels_per_cell: int | None = None,
                 cells_per_block: int = 2) -> torch.Tensor:
    """Histogram-of-oriented-gradients features (Dalal & Triggs, 2005) of (N, H, W) maps.

    Follows ``skimage.feature.hog`` with ``block_norm="L2-Hys"``: central-difference gradients
    (zero on the border), unsigned orientations hard-binned into ``orientations`` bins, cell
    histograms of gradient magnitude divided by the cell area, and blocks of
    ``cells_per_block`` cells (stride one cell) normalised. ``pixels_per_cell`` defaults to 8,
    or a quarter of the shorter side for maps under 32 pixels. Returns (N, n_features).
    """
    x = _maps2d(a)
    n, h, w = x.shape
    c = pixels_per_cell or (8 if min(h, w) >= 32 else max(2, min(h, w) // 4))
    gr, gc = torch.zeros_like(x), torch.zeros_like(x)
    gr[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    gc[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    mag = torch.hypot(gr, gc)
    ang = torch.remainder(torch.rad2deg(torch.atan2(gr, gc)), 180.0)
    bins = torch.clamp((ang / (180.0 / orientations)).floor().long(), 0, orientations - 1)
    nr, nc = h // c, w // c
    if nr < cells_per_block or nc < cells_per_block:
        raise InputError(f"maps of {h}x{w} are too small for HOG with {c}-pixel cells and "
                         f"{cells_per_block}-cell blocks")
    onehot = F.one_hot(bins[:, : nr * c, : nc * c], orientations).double() * mag[:, : nr * c, : nc * c, None]
    hist = onehot.view(n, nr, c, nc, c, orientations).sum((2, 4)) / (c * c)  # (N, nr, nc, O)
    b = cells_per_block
    blocks = hist.unfold(1, b, 1).unfold(2, b, 1)  # (N, br, bc, O, b, b)
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).reshape(n, nr - b + 1, nc - b + 1, -1)
    eps = 1e-5
    out = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + eps**2)
    out = out.clamp(max=0.2)
    out = out / torch.sqrt((out**2).sum(-1, keepdim=True) + eps**2)
    return out.reshape(n, -1)


def hog_similarity(a: torch.Tensor, b: torch.Tensor, *, absolute: bool = True,
                   **options: int) -> torch.Tensor:
    """Pearson correlation of the HOG features of two batches of maps (Adebayo et al., 2018),
    each map taken in absolute value (``absolute``) and scaled to [0, 1] first."""
    x, y = _maps2d(a), _maps2d(b)
    if absolute:
        x, y = x.abs(), y.abs()
    return pearson(hog_features(_unit_range(x), **options), hog_features(_unit_range(y), **options))
