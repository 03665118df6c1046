"""``torchvision.transforms`` stand-in: a working :class:`Normalize`; ``Compose`` and
``ToTensor`` exist for pytorch-grad-cam's imports but raise when used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._standin import missing, module_getattr
from . import functional

__all__ = ["Compose", "Normalize", "ToTensor", "functional"]


class Normalize(nn.Module):
    """Normalise a tensor image channel-wise: ``(x - mean[c]) / std[c]``.

    Works like torchvision's: ``x`` has shape ``(..., C, H, W)``; ``mean`` and ``std`` are
    sequences of length ``C`` (or scalars). With ``inplace=True`` the input is overwritten.
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float,
                 inplace: bool = False) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return functional.normalize(tensor, self.mean, self.std, self.inplace)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class Compose:
    """Placeholder for torchvision's ``Compose`` (raises when constructed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        missing("torchvision.transforms.Compose")


class ToTensor:
    """Placeholder for torchvision's ``ToTensor`` (raises when constructed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        missing("torchvision.transforms.ToTensor")


__getattr__ = module_getattr("torchvision.transforms")
