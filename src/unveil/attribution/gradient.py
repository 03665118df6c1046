"""Single-pass gradient methods: the gradient of the target score with respect to the input."""

from __future__ import annotations

from typing import Any

import torch

from ..core.batching import BatchSize, map_chunked
from ..core.registry import register
from ._base import Attributor, Call

__all__ = ["Saliency"]


def batched_gradient(
    method: Attributor, call: Call, x: torch.Tensor, targets: torch.Tensor | None
) -> torch.Tensor:
    """d target score / d input for every row of ``x``, in auto-sized chunks."""
    model = call.model
    name = method.name

    def run(a: int, b: int) -> torch.Tensor:
        return model.gradient(x[a:b], None if targets is None else targets[a:b], method=name)[1]

    return map_chunked(
        run, x.shape[0], batch_size=method.batch_size, model=model, grad=True,
        key=("gradient", tuple(x.shape[1:])),
    )


@register("saliency", family="gradient", needs_gradients=True)
class Saliency(Attributor):
    """Gradient of the target score with respect to the input (Simonyan et al., 2014).

    Parameters
    ----------
    abs : bool
        Return ``|gradient|`` (the paper's saliency map, default) or the signed gradient.
    """

    def __init__(self, model: Any, *, abs: bool = True, batch_size: BatchSize = "auto") -> None:
        super().__init__(model, batch_size=batch_size)
        self.abs = abs

    def _attribute(self, call: Call, **kwargs: Any) -> dict[str, Any]:
        _reject(kwargs, self.name)
        call.model.require_gradients(self.name)
        g = batched_gradient(self, call, call.x, call.targets)
        return {"values": g.abs() if self.abs else g}


def _reject(kwargs: dict[str, Any], name: str) -> None:
    if kwargs:
        from ..errors import OptionError

        raise OptionError(f"{name!r} takes no call options {sorted(kwargs)}; pass only target=")
