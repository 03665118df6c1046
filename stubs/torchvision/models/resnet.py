"""``torchvision.models.resnet`` stand-in: the block classes zennit's canonizers test against.

They exist so that ``isinstance(module, BasicBlock)`` works (it is never true for a user's
model); constructing one raises :class:`~torchvision.StandInError`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._standin import missing, module_getattr

__all__ = ["BasicBlock", "Bottleneck"]


class BasicBlock(nn.Module):
    """Placeholder for torchvision's ResNet ``BasicBlock`` (cannot be built)."""

    expansion = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        missing("torchvision.models.resnet.BasicBlock")


class Bottleneck(nn.Module):
    """Placeholder for torchvision's ResNet ``Bottleneck`` (cannot be built)."""

    expansion = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        missing("torchvision.models.resnet.Bottleneck")


__getattr__ = module_getattr("torchvision.models.resnet")
