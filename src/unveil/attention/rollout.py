"""Attention rollout and gradient-weighted rollout: the arithmetic on captured maps.

All functions work on batches of attention probabilities shaped (N, L, H, T, T) — sample,
layer, head, query token, key token — and return token-to-token relevance (N, T, T), where row
``i`` says how much each input token contributes to the representation of token ``i`` at the top.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import OptionError

__all__ = ["HeadFusion", "fuse_heads", "grad_weighted_rollout", "residual_attention", "rollout"]

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(probs: torch.Tensor, how: HeadFusion = "mean") -> torch.Tensor:
    """Combine the heads of (N, L, H, T, T) maps into (N, L, T, T) by mean, max or min."""
    if how == "mean":
        return probs.mean(dim=2)
    if how == "max":
        return probs.amax(dim=2)
    if how == "min":
        return probs.amin(dim=2)
    raise OptionError(f"head_fusion must be 'mean', 'max' or 'min', got {how!r}")


def residual_attention(att: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """``residual * I + (1 - residual) * A``, rows renormalised to sum to one.

    Abnar & Zuidema (2020) account for the residual connections around each attention block
    this way, with ``residual = 0.5``. ``att`` is (..., T, T).
    """
    if not 0.0 <= residual < 1.0:
        raise OptionError(f"residual must be in [0, 1), got {residual!r}")
    eye = torch.eye(att.shape[-1], dtype=att.dtype, device=att.device)
    a = (1.0 - residual) * att + residual * eye
    return a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def rollout(att: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers").

    Parameters
    ----------
    att : Tensor
        (N, L, T, T) head-fused attention per layer, first layer first.
    residual : float
        Weight of the identity added for the residual connections (0.5 in the paper; 0 gives
        the plain product of the attention matrices).

    Returns
    -------
    Tensor
        (N, T, T): ``Ã_L @ ... @ Ã_1`` with ``Ã_l = residual_attention(A_l)``. Row ``i`` is the
        attention of top-layer token ``i`` to each input token; rows sum to one.
    """
    a = residual_attention(att, residual)
    out = a[:, 0]
    for layer in range(1, a.shape[1]):
        out = a[:, layer] @ out
    return out


def grad_weighted_rollout(att: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021, eq. 5-6).

    ``Ā_l = mean_h (∇A_l ⊙ A_l)^+`` and ``R ← R + Ā_l R`` from ``R = I``, first layer first.

    Parameters
    ----------
    att, grad : Tensor
        (N, L, H, T, T) attention probabilities and the gradient of the target score with
        respect to them.

    Returns
    -------
    Tensor
        (N, T, T) relevance; row ``i`` scores every input token for output token ``i``.
    """
    cam = (grad * att).clamp_min(0).mean(dim=2)  # (N, L, T, T)
    n, n_layers, t = cam.shape[0], cam.shape[1], cam.shape[-1]
    r = torch.eye(t, dtype=cam.dtype, device=cam.device).expand(n, t, t).clone()
    for layer in range(n_layers):
        r = r + cam[:, layer] @ r
    return r
