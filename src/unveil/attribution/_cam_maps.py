"""The arithmetic of class activation maps, on channel maps ``A`` and gradients ``G``.

Every function takes ``(N, C, *s)`` tensors and returns the raw (signed, un-normalised) map
``(N, *s)``; the caller applies the ReLU, the normalisation and the resizing. Formulas and their
numerical constants follow the papers as implemented by pytorch-grad-cam 1.5.7, so that the maps
agree with it.
"""

from __future__ import annotations

import torch

__all__ = [
    "eigen_cam",
    "grad_cam",
    "grad_cam_plus_plus",
    "hires_cam",
    "layer_cam",
    "weighted_sum",
    "xgrad_cam",
]


def _spatial(a: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, a.ndim))


def weighted_sum(weights: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k A_k`` for per-channel weights ``(N, C)``."""
    return (weights.reshape(*weights.shape, *([1] * (a.ndim - 2))) * a).sum(dim=1)


def grad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): channels weighted by their mean gradient."""
    return weighted_sum(g.mean(dim=_spatial(g)), a)


def grad_cam_plus_plus(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al., 2018), eq. 19 with the exponential-score identity.

    ``alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6)`` (zero where ``g == 0``), weights
    ``sum(alpha * relu(g))``.
    """
    ax = _spatial(a)
    g2 = g * g
    sum_a = a.sum(dim=ax, keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return weighted_sum((alpha * g.clamp(min=0)).sum(dim=ax), a)


def xgrad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al., 2020): weights ``sum(g * A) / (sum(A) + 1e-7)``."""
    ax = _spatial(a)
    w = (g * a / (a.sum(dim=ax, keepdim=True) + 1e-7)).sum(dim=ax)
    return weighted_sum(w, a)


def layer_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., 2021): ``sum_k relu(g_k) * A_k``, element-wise weights."""
    return (g.clamp(min=0) * a).sum(dim=1)


def hires_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin, 2020): ``sum_k g_k * A_k``, element-wise weights."""
    return (g * a).sum(dim=1)


def eigen_cam(a: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, 2020): projection on the first principal component.

    Each row's activations, as ``(positions, channels)`` centred per channel, are projected
    onto their first right singular vector, computed from the smaller of the two Gram matrices
    (``eigh``; float32 is within 1e-6 of float64 relative to the map's maximum and takes half
    the time). The sign of a singular vector is arbitrary; it is fixed so that the projection
    correlates positively with the channel-summed activation map (pytorch-grad-cam leaves it
    to the SVD routine).
    """
    n, c = a.shape[:2]
    work = torch.float64 if a.dtype == torch.float64 else torch.float32
    m = torch.nan_to_num(a.reshape(n, c, -1).transpose(1, 2).to(work), nan=0.0)
    m = m - m.mean(dim=1, keepdim=True)  # (N, P, C), centred per channel
    if m.shape[1] <= m.shape[2]:
        # m v1 = s1 u1, with u1 the top eigenvector of the small Gram matrix m m^T
        vals, vecs = torch.linalg.eigh(m @ m.transpose(1, 2))
        proj = vecs[..., -1] * vals[:, -1:].clamp(min=0).sqrt()
    else:
        _, vecs = torch.linalg.eigh(m.transpose(1, 2) @ m)
        proj = (m @ vecs[..., -1:])[..., 0]
    ref = m.sum(dim=2)  # the channel-summed map, centred over positions
    sign = torch.where((proj * ref).sum(dim=1) < 0, -1.0, 1.0).to(proj)
    out: torch.Tensor = (proj * sign[:, None]).to(a.dtype).reshape(n, *a.shape[2:])
    return out
