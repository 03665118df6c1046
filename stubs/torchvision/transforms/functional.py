"""``torchvision.transforms.functional`` stand-in: ``normalize`` works, ``resize`` raises."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._standin import module_getattr, placeholder_function

__all__ = ["normalize", "resize"]


def normalize(tensor: torch.Tensor, mean: Sequence[float] | float, std: Sequence[float] | float,
              inplace: bool = False) -> torch.Tensor:
    """``(tensor - mean[c]) / std[c]`` over the channel axis ``-3`` of a float tensor image."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor should be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"input tensor should be a float tensor, got {tensor.dtype}")
    if tensor.ndim < 3:
        raise ValueError(
            f"expected a tensor image of shape (..., C, H, W), got shape {tuple(tensor.shape)}"
        )
    m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    if bool((s == 0).any()):
        raise ValueError(f"std evaluated to zero after conversion to {tensor.dtype}, leading to division by zero")
    if m.ndim == 1:
        m = m.view(-1, 1, 1)
    if s.ndim == 1:
        s = s.view(-1, 1, 1)
    if not inplace:
        return (tensor - m) / s
    return tensor.sub_(m).div_(s)


resize = placeholder_function("torchvision.transforms.functional.resize")

__getattr__ = module_getattr("torchvision.transforms.functional")
