"""Reference inputs for path and reference methods: ``baseline=`` and ``background=``."""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BaselineError
from .model import to_tensor

__all__ = ["BaselineSpec", "blur", "make_background", "make_baseline"]

BaselineSpec = Union[float, int, str, torch.Tensor, np.ndarray, None]


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur over the last two axes (images); ``sigma`` defaults to 1/10 of the side."""
    if x.ndim < 3:
        raise BaselineError(f"'blur' baselines need image-like inputs, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    s = float(sigma) if sigma is not None else max(h, w) / 10.0
    r = max(1, int(math.ceil(3 * s)))
    k = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(k**2) / (2 * s * s))
    k = k / k.sum()
    lead = x.shape[:-2]
    y = x.reshape(-1, 1, h, w)
    y = F.pad(y, (r, r, 0, 0), mode="replicate" if w > 1 else "constant")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, r, r), mode="replicate" if h > 1 else "constant")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(*lead, h, w)


def make_baseline(
    spec: BaselineSpec, x: torch.Tensor, *, seed: int | None = None, background: torch.Tensor | None = None
) -> torch.Tensor:
    """A baseline broadcast to ``x``'s shape, on its device and dtype.

    ``spec`` is a number, ``"zeros"``, ``"blur"``, ``"mean"`` (the background's mean when one is
    given, else each sample's mean over its non-batch axes per channel for images and the batch
    mean per column for tables), ``"uniform"`` (noise in the inputs' range, seeded) or a
    tensor/array broadcastable to ``x``.
    """
    if spec is None or (isinstance(spec, str) and spec == "zeros"):
        return torch.zeros_like(x)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.full_like(x, float(spec))
    if isinstance(spec, str):
        if spec == "blur":
            return blur(x)
        if spec == "mean":
            if background is not None:
                return background.mean(dim=0, keepdim=True).expand_as(x).clone()
            if x.ndim >= 3:
                return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
            return x.mean(dim=0, keepdim=True).expand_as(x).clone()
        if spec == "uniform":
            g = torch.Generator(device="cpu").manual_seed(0 if seed is None else int(seed))
            lo, hi = float(x.min()), float(x.max())
            u = torch.rand(x.shape, generator=g, dtype=torch.float64)
            return (lo + (hi - lo) * u).to(device=x.device, dtype=x.dtype)
        raise BaselineError(
            f"unknown baseline {spec!r}; use a number, 'zeros', 'blur', 'mean', 'uniform' or a "
            "tensor broadcastable to the inputs"
        )
    t = to_tensor(spec, name="baseline").to(device=x.device, dtype=x.dtype)
    if not bool(torch.isfinite(t).all()):
        raise BaselineError("the baseline contains NaN or infinite values")
    try:
        return torch.broadcast_to(t, x.shape).clone()
    except RuntimeError:
        raise BaselineError(
            f"baseline of shape {tuple(t.shape)} cannot be broadcast to inputs of shape "
            f"{tuple(x.shape)}; give one per sample, one for all (1, ...) or a scalar"
        ) from None


def make_background(background: Any, x: torch.Tensor) -> torch.Tensor:
    """Validate a background set (M, *sample_shape) and move it to ``x``'s device and dtype."""
    if background is None:
        raise BaselineError("this method needs background=, a set of reference rows (M, ...)")
    b = to_tensor(background, name="background")
    if b.ndim == x.ndim - 1 and tuple(b.shape) == tuple(x.shape[1:]):
        b = b.unsqueeze(0)
    if tuple(b.shape[1:]) != tuple(x.shape[1:]):
        raise BaselineError(
            f"background rows have shape {tuple(b.shape[1:])} but inputs have {tuple(x.shape[1:])}; "
            "pass background as (M, *sample_shape)"
        )
    if b.is_floating_point() and not bool(torch.isfinite(b).all()):
        raise BaselineError("the background contains NaN or infinite values")
    return b.to(device=x.device, dtype=x.dtype if x.is_floating_point() else b.dtype)
