"""Single-pass gradient methods: Saliency and Input x Gradient (and the machinery they share
with guided backprop and deconvnet).

A single-pass method needs one forward and one backward pass per row. The generic call flow
(:class:`~unveil.attribution._base.Attributor`) would first run a separate forward pass to find
the target and the score, which costs about a third more; these methods instead resolve the
target from the same forward pass they differentiate (chunk by chunk), so they cost what a
plain ``torch.autograd.grad`` call costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.batching import BatchSize, map_chunked, rows_located, run_chunked
from ..core.model import Model, TargetSpec
from ..core.options import Option
from ..core.registry import register
from ._base import Attributor, Call, FirstPass, Partial, refuse_options
from ._layers import Context, NeuronSpec, Space
from ._options import SPACE

__all__ = [
    "Fused", "InputXGradient", "Saliency", "SinglePass", "batched_gradient", "fused_pass",
    "gradient_values",
]

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        key=("gradient", None, None, tuple(x.shape[1:])),
    )


def gradient_values(
    space: Space, combine: Combine, *, context: Context = None, batch_size: BatchSize = "auto"
) -> torch.Tensor:
    """``combine(points, gradient)`` at every point of ``space``, in auto-sized chunks."""
    pts = space.points

    def run(a: int, b: int) -> torch.Tensor:
        r = torch.arange(a, b, device=pts.device)
        _, g = space.gradient(r, pts[a:b], context=context)
        return combine(pts[a:b], g)

    return map_chunked(
        run, pts.shape[0], batch_size=batch_size, model=space.model, grad=True,
        key=space.key("gradient", pts.shape[0]),
    )


def target_slicer(model: Model, target: TargetSpec, n: int) -> Callable[[int, int], TargetSpec]:
    """Per-chunk target specs; a per-row sequence is checked for length and type up front."""
    if target is None or isinstance(target, (str, int, np.integer)):
        return lambda a, b: target
    # check length and dtype now (the range is checked per chunk against the real outputs)
    wide = torch.empty(n, 1, device=model.device).expand(n, 1 << 40)
    t = model.resolve_targets(target, wide)
    assert t is not None
    return lambda a, b: t[a:b]


@dataclass
class Fused:
    """One forward+backward per row in ``space``: all scores, the resolved targets, the objective
    (target score or unit value) and the combined values."""

    space: Space
    all_outputs: torch.Tensor
    targets: torch.Tensor | None
    outputs: torch.Tensor
    values: torch.Tensor


def fused_pass(
    space: Space, target: TargetSpec, combine: Combine, *, context: Context, batch_size: BatchSize
) -> Fused:
    """One forward+backward per row: scores, targets, objective and combined values."""
    model, x = space.model, space.inputs
    tslice = target_slicer(model, target, x.shape[0])
    parts: dict[str, list[torch.Tensor]] = {"all": [], "t": [], "obj": [], "v": []}

    def run(a: int, b: int) -> tuple[torch.Tensor, ...]:
        p = space.forward(x[a:b], None, grad=True, context=context)
        t = model.resolve_targets(tslice(a, b), p.all_out.detach())
        obj, g = space.differentiate(p, t)
        t_out = torch.empty(0) if t is None else t
        return p.all_out.detach(), t_out, obj, combine(p.z.detach(), g)

    def consume(_a: int, _b: int, res: tuple[torch.Tensor, ...]) -> None:
        for k, v in zip(("all", "t", "obj", "v"), res):
            parts[k].append(v)

    run_chunked(
        rows_located(run, x.shape[0]), x.shape[0], consume=consume, batch_size=batch_size,
        model=model, grad=True,
        key=space.key("gradient", x.shape[0]),
    )
    out = {k: torch.cat(v) for k, v in parts.items()}
    return Fused(space, all_outputs=out["all"], targets=out["t"] if out["t"].numel() else None,
                 outputs=out["obj"], values=out["v"])


class SinglePass(Attributor):
    """Base of methods computed from one forward and backward pass at each input.

    Call options: ``layer=`` (attribute to that layer's output), ``neuron=`` (explain one unit
    instead of the target score; see :mod:`unveil.attribution._layers`). The first pass of the
    call is the method's own forward and backward pass (:func:`fused_pass`); a plain function
    whose backend is not known yet takes the generic flow.
    """

    def _combine(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Values from the points and the gradient there."""
        raise NotImplementedError

    def _context(self) -> Context:
        """A context manager factory active during the forward pass (modified backward)."""
        return None

    def _first_pass(
        self, x: torch.Tensor, target: TargetSpec, *, layer: str | None = None,
        neuron: NeuronSpec = None, **kwargs: Any,
    ) -> FirstPass:
        refuse_options(self.name, kwargs, ("target", "layer", "neuron"))
        model = self.model
        if model.backend == "auto":  # a plain function not probed yet: the generic flow
            return super()._first_pass(x, target)
        model.require_gradients(self.name)
        space = Space(model, x, None, layer=layer, neuron=neuron, method=self.name,
                      batch_size=self.batch_size)
        fused = fused_pass(space, target, self._combine, context=self._context(),
                           batch_size=self.batch_size)
        return FirstPass(fused.all_outputs, fused.targets, state=fused)

    def _attribute(
        self, call: Call, *, layer: str | None = None, neuron: NeuronSpec = None
    ) -> Partial:
        if isinstance(call.first_pass, Fused):  # the first pass did the work
            call.outputs = call.first_pass.outputs
            return call.first_pass.space.finish(Partial(values=call.first_pass.values))
        call.model.require_gradients(self.name)
        space = Space(call.model, call.x, call.targets, layer=layer, neuron=neuron,
                      method=self.name, batch_size=self.batch_size)
        if space.unit_module is not None:
            call.outputs = space.outputs()
        return space.finish(self._attribute_space(space))

    def _attribute_space(self, space: Space) -> Partial:
        """Values at every point of ``space`` (used directly by SmoothGrad)."""
        values = gradient_values(space, self._combine, context=self._context(),
                                 batch_size=self.batch_size)
        return Partial(values=values)


@register(
    "saliency", family="gradient", needs_gradients=True, display_name="Saliency", signed=False,
    preferred_for={"image": 3, "tabular": 2, "text": 3, "sequence": 2},
    options=(Option("abs", bool, True, "return |gradient| (the paper's saliency map) rather "
                    "than the signed gradient"), *SPACE),
)
class Saliency(SinglePass):
    """Gradient of the target score with respect to the input (Simonyan et al., 2014).

    "Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency
    Maps", ICLR workshop 2014. Equals ``captum.attr.Saliency``.

    Parameters
    ----------
    abs : bool
        Return ``|gradient|`` (the paper's saliency map, default) or the signed gradient.
    batch_size : int or "auto"
        Rows per forward/backward chunk.

    Call with ``layer=`` for the gradient with respect to a layer's output, ``neuron=`` to
    explain one unit. Values are shaped like the inputs (like the layer's output with
    ``layer=``; ``(N, T)`` for token ids).
    """

    def __init__(self, model: Any, *, abs: bool = True, batch_size: BatchSize = "auto") -> None:
        super().__init__(model, batch_size=batch_size)
        self.abs = abs

    def _combine(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g.abs() if self.abs else g


@register("input_x_gradient", family="gradient", needs_gradients=True,
          display_name="Input × Gradient", signed=True, options=SPACE)
class InputXGradient(SinglePass):
    """Input times gradient (Shrikumar et al., 2016; Gradient x Activation at a layer).

    "Not Just a Black Box: Learning Important Features Through Propagating Activation
    Differences", arXiv:1605.01713. Equals ``captum.attr.InputXGradient`` (and
    ``LayerGradientXActivation`` with ``layer=``). On a linear model it equals Integrated
    Gradients with a zero baseline.

    Parameters
    ----------
    batch_size : int or "auto"
        Rows per forward/backward chunk.
    """

    def _combine(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return z * g
