"""Guided backpropagation and deconvnet: gradients with modified backward passes through ReLU.

Both replace, during the backward pass only, how a gradient ``g`` passes a ReLU ``y = relu(z)``:

- guided backprop (Springenberg et al., 2015): ``relu(g) * (z > 0)``
- deconvnet (Zeiler & Fergus, 2014): ``relu(g)``

Every ReLU of the forward pass is swapped for a custom autograd function while the call runs
(:mod:`unveil.attribution._override`), so ``nn.ReLU(inplace=True)``, one ``nn.ReLU`` object
used several times, and ``F.relu`` / ``torch.relu`` / ``Tensor.relu_`` inside ``forward`` all
get the rule; the model itself is never modified. Other activations keep their gradient (as in
Captum). A ReLU that runs inside TorchScript cannot be swapped and raises
:class:`~unveil.errors.ModelError`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from ..core.registry import register
from ._layers import Context
from ._options import SPACE
from ._override import RELU_OPS, RELUS, Handler, parse_activation, require_python_model, swapped
from .gradient import SinglePass

__all__ = ["Deconvnet", "GuidedBackprop", "relu_rule"]


class _RuleReLU(torch.autograd.Function):
    """``relu`` forward; guided or deconvnet rule backward (in place when asked)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, deconv: bool, inplace: bool) -> torch.Tensor:
        if inplace:
            out = z.relu_()
            ctx.mark_dirty(z)
        else:
            out = torch.relu(z)
        ctx.deconv = deconv
        if not deconv:
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if ctx.deconv:
            return grads[0].clamp_min(0), None, None
        (out,) = ctx.saved_tensors
        # relu's own backward (g where out > 0), then keep the positive part: two fused passes
        g = torch.ops.aten.threshold_backward(grads[0], out, 0)
        return g.clamp_min_(0), None, None


def relu_rule(kind: str, method: str) -> Callable[[], AbstractContextManager[Any]]:
    """A context factory in which every ReLU call uses the ``kind`` backward rule."""
    deconv = kind == "deconvnet"

    def handler(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        act = parse_activation(func, args, kwargs)
        return _RuleReLU.apply(act.z, deconv, act.inplace)  # type: ignore[no-untyped-call]  # torch's Function.apply

    handlers: dict[Any, Handler] = {f: handler for f in RELUS}
    return lambda: swapped(handlers, method=method, watched=RELU_OPS)


@register("guided_backprop", family="gradient", needs_gradients=True,
          display_name="Guided Backprop", signed=False, options=SPACE)
class GuidedBackprop(SinglePass):
    """Guided backpropagation: only positive gradients pass ReLUs, and only where active.

    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR workshop
    2015. Equals ``captum.attr.GuidedBackprop`` on models whose ReLUs are distinct,
    non-in-place ``nn.ReLU`` modules, and stays correct when they are not.

    Parameters
    ----------
    batch_size : int or "auto"
        Rows per forward/backward chunk.

    Call options: ``layer=``, ``neuron=`` (as :class:`~unveil.attribution.gradient.Saliency`).
    """

    def _combine(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g

    def _context(self) -> Context:
        require_python_model(self.model.module, self.name)
        return relu_rule("guided", self.name)


@register("deconvnet", family="gradient", needs_gradients=True, display_name="Deconvnet",
          signed=False, options=SPACE)
class Deconvnet(SinglePass):
    """Deconvnet: gradients pass ReLUs rectified, regardless of the forward activation.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.
    Equals ``captum.attr.Deconvolution`` on models whose ReLUs are distinct, non-in-place
    ``nn.ReLU`` modules, and stays correct when they are not.

    Parameters
    ----------
    batch_size : int or "auto"
        Rows per forward/backward chunk.
    """

    def _combine(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g

    def _context(self) -> Context:
        require_python_model(self.model.module, self.name)
        return relu_rule("deconvnet", self.name)
