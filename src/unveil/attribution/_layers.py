"""Where gradient attributions are taken: the inputs, one layer's output, or token embeddings.

A :class:`Space` is the set of points a gradient method differentiates at, one row per explained
row: the inputs themselves, or the output of ``layer=`` (Captum's *layer* attribution, e.g.
Gradient x Activation or layer Integrated Gradients). For integer token ids the space is the
output of the model's first ``nn.Embedding`` (or of ``layer=``) and the final values are summed
over the hidden axis, one value per token ``(N, T)``.

In a layer space the model runs on the explained row's inputs with the layer's output *replaced*
by the point (a forward hook); attributions are gradients of ``z -> F(z; x)``, the rest of the
network seen from that layer. ``neuron=`` replaces the target score by one unit of a layer:
``neuron=("features.3", (c, h, w))`` or, with ``layer=`` naming the unit's layer, a bare index
(attributions then go to the inputs, as in Captum's ``Neuron*`` methods); a callable maps the
layer output ``(N, ...)`` to one value per row.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

from ..core.batching import BatchSize, run_chunked
from ..core.hooks import StopForward, forward_hooks
from ..core.model import Model
from ..errors import BaselineError, InputError, ModelError, NotDifferentiableError, OptionError

if TYPE_CHECKING:
    from ._base import Call, Partial

__all__ = ["Context", "NeuronSpec", "Pass", "Space", "find_embedding"]

NeuronSpec = Union[int, tuple[Any, ...], Callable[[torch.Tensor], torch.Tensor], None]
Context = Union[Callable[[], AbstractContextManager[Any]], None]


def find_embedding(module: nn.Module | None) -> str:
    """Dotted name of the first ``nn.Embedding`` of ``module`` (for token-id inputs)."""
    if module is not None:
        for name, m in module.named_modules():
            if isinstance(m, nn.Embedding):
                return str(name)
    raise InputError(
        "the inputs are integer token ids, which cannot be differentiated, and the model has no "
        "nn.Embedding to attribute at; pass layer= the layer whose output to attribute to"
    )


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(
        f"the layer returned {type(out).__name__}; layer attribution needs a tensor or a "
        "tuple whose first item is a tensor"
    )


def _replace_first(out: Any, z: torch.Tensor) -> Any:
    if isinstance(out, torch.Tensor):
        return z
    return type(out)([z, *out[1:]]) if isinstance(out, list) else (z, *out[1:])


@dataclass
class Pass:
    """One forward pass in a space: all scores, the points (a leaf if grad), the unit's value."""

    all_out: torch.Tensor
    z: torch.Tensor
    unit: torch.Tensor | None


def _unit_selector(spec: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(spec):
        return spec  # type: ignore[no-any-return]  # user callable, checked at use
    idx = (spec,) if isinstance(spec, int) else spec
    if not isinstance(idx, tuple) or not all(isinstance(i, int) for i in idx):
        raise OptionError(
            f"neuron index must be an int, a tuple of ints or a callable, got {spec!r}"
        )

    def select(act: torch.Tensor) -> torch.Tensor:
        if act.ndim - 1 != len(idx):
            raise OptionError(
                f"neuron index {idx} has {len(idx)} entries, but the layer's rows have shape "
                f"{tuple(act.shape[1:])}; give one index per axis"
            )
        try:
            return act[(slice(None), *idx)]
        except IndexError:
            raise OptionError(
                f"neuron index {idx} is out of range for layer rows of shape {tuple(act.shape[1:])}"
            ) from None

    return select


class Space:
    """The points a gradient method differentiates at, one per row, with their model calls.

    Rows map to source inputs through ``rows`` (SmoothGrad repeats rows and moves the points).
    """

    def __init__(
        self,
        model: Model,
        inputs: torch.Tensor,
        targets: torch.Tensor | None,
        *,
        layer: str | None = None,
        neuron: NeuronSpec = None,
        method: str = "gradient",
        batch_size: BatchSize = "auto",
    ) -> None:
        self.model, self.inputs, self.method, self.batch_size = model, inputs, method, batch_size
        self.text = not inputs.is_floating_point()
        self.neuron_label: str | None = None
        self.unit_name: str | None = None
        self._select: Callable[[torch.Tensor], torch.Tensor] | None = None
        if neuron is not None:
            if isinstance(neuron, tuple) and len(neuron) == 2 and isinstance(neuron[0], str):
                self.unit_name, self._select = neuron[0], _unit_selector(neuron[1])
            elif layer is None:
                raise OptionError(
                    f"neuron={neuron!r} needs the layer that holds the unit: pass layer= too, "
                    "or neuron=('layer.name', index)"
                )
            else:
                self.unit_name, self._select, layer = layer, _unit_selector(neuron), None
            self.neuron_label = f"{self.unit_name}:{'callable' if callable(neuron) else neuron!r}"
        if layer is None and self.text:
            layer = find_embedding(model.module)
        self.layer = layer
        self.module = None if layer is None else model.layer(layer)
        self.unit_module = None if self.unit_name is None else model.layer(self.unit_name)
        self.targets0 = targets
        self.rows = torch.arange(inputs.shape[0], device=inputs.device)
        self._points: torch.Tensor | None = inputs if layer is None else None
        self._outputs: torch.Tensor | None = None

    @classmethod
    def of_call(
        cls, call: Call, *, method: str, batch_size: BatchSize, layer: str | None = None,
        neuron: NeuronSpec = None,
    ) -> Space:
        """The space a gradient method explains ``call`` in: checks that the model gives
        gradients, and sets ``call.outputs`` to the objective at the explained points."""
        call.model.require_gradients(method)
        space = cls(call.model, call.x, call.targets, layer=layer, neuron=neuron, method=method,
                    batch_size=batch_size)
        call.outputs = space.outputs(call.outputs)
        return space

    # -- derived spaces and rows --------------------------------------------------------
    def moved(self, rows: torch.Tensor, points: torch.Tensor) -> Space:
        """The same space with rows ``rows`` (source indices) at new ``points``."""
        new = copy.copy(self)
        new.rows, new._points, new._outputs = rows, points, None
        return new

    def key(self, kind: str, total: int) -> tuple[Any, ...]:
        """A cache key for the core's automatic chunk size.

        Workloads of at most 64 rows get their own key: the core does not probe them and
        caches the row count itself, which must not cap later, larger workloads.
        """
        return (kind, self.layer, self.unit_name, tuple(self.inputs.shape[1:]), total > 64)

    def targets(self, r: torch.Tensor) -> torch.Tensor | None:
        """Targets of space rows ``r``."""
        return None if self.targets0 is None else self.targets0[self.rows[r]]

    def source(self, r: torch.Tensor) -> torch.Tensor:
        """Model inputs of space rows ``r``."""
        return self.inputs[self.rows[r]]

    # -- one forward pass ----------------------------------------------------------------
    def forward(
        self, inputs: torch.Tensor, pts: torch.Tensor | None, *, grad: bool, context: Context = None,
        points_only: bool = False,
    ) -> Pass:
        """Run the model on ``inputs``; in a layer space the layer's output becomes ``pts``.

        With ``pts=None`` the natural points are used (and returned). With ``grad`` the points
        are a leaf that requires grad, so ``torch.autograd.grad(objective, p.z)`` works. With
        ``points_only`` (a layer space, no unit) the pass stops at the layer: ``p.z`` is all it
        returns, and the rest of the network is not run.
        """
        stop = points_only and self.module is not None and self.unit_module is None and not grad
        state: dict[str, Any] = {"z": None, "unit": None, "calls": 0, "stop": stop}
        hooks: list[tuple[nn.Module, Callable[..., Any]]] = []
        if self.module is not None:
            hooks.append((self.module, self._replace_hook(state, pts, grad)))
        else:
            src = inputs if pts is None else pts
            if not src.is_floating_point():
                raise InputError(f"{self.method!r} needs float inputs, got {src.dtype}")
            state["z"] = src.detach().requires_grad_(grad)
        if self.unit_module is not None:
            hooks.append((self.unit_module, self._unit_hook(state)))
        ctx = context() if context is not None else contextlib.nullcontext()
        out: Any = None
        with forward_hooks(hooks), ctx, torch.set_grad_enabled(grad):
            try:
                # a copy of the points: the model may modify its input in place
                out = self.model.forward(inputs if self.module is not None else state["z"].clone())
            except StopForward:
                pass
        if state["z"] is None or (self.unit_module is not None and state["unit"] is None):
            raise ModelError(
                f"layer {self.layer or self.unit_name!r} did not run in the model's forward pass; "
                "choose a layer that the forward pass calls"
            )
        return Pass(out, state["z"], state["unit"])

    def _replace_hook(
        self, state: dict[str, Any], pts: torch.Tensor | None, grad: bool
    ) -> Callable[..., Any]:
        def hook(_m: nn.Module, _args: Any, out: Any) -> Any:
            state["calls"] += 1
            if state["calls"] > 1:
                raise ModelError(
                    f"layer {self.layer!r} runs more than once per forward pass, so its output "
                    "is not one set of activations; choose a layer that runs once"
                )
            t = _first_tensor(out)
            if pts is not None and tuple(pts.shape) != tuple(t.shape):
                raise ModelError(
                    f"layer {self.layer!r} gave shape {tuple(t.shape)} here but "
                    f"{tuple(pts.shape)} for the same rows before; its output must not depend on "
                    "the input values"
                )
            # the model may modify what it gets in place: it never gets the recorded points
            if not grad and pts is None:
                state["z"] = t.detach().clone()
                if state["stop"]:
                    raise StopForward
                return None
            z = (t if pts is None else pts).detach()
            state["z"] = z.requires_grad_() if grad else z
            return _replace_first(out, z.clone())

        return hook

    def _unit_hook(self, state: dict[str, Any]) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            if state["unit"] is not None:
                raise ModelError(
                    f"layer {self.unit_name!r} runs more than once per forward pass; choose a "
                    "neuron in a layer that runs once"
                )
            assert self._select is not None
            v = self._select(_first_tensor(out))
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != (out_rows(out),):
                raise OptionError(
                    "the neuron selector must return one value per row, shape (N,); got "
                    f"{getattr(v, 'shape', type(v).__name__)}"
                )
            state["unit"] = v.clone()

        return hook

    def objective(self, p: Pass, targets: torch.Tensor | None) -> torch.Tensor:
        """What is explained, per row: the unit's value, or the target score."""
        return p.unit if p.unit is not None else Model.select(p.all_out, targets)

    def gradient(
        self, r: torch.Tensor, pts: torch.Tensor, *, context: Context = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective and its gradient with respect to the points ``pts`` of space rows ``r``."""
        p = self.forward(self.source(r), pts, grad=True, context=context)
        return self.differentiate(p, self.targets(r))

    def differentiate(
        self, p: Pass, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective of a pass and its gradient with respect to the pass's points."""
        with torch.enable_grad():
            obj = self.objective(p, targets)
            if not obj.requires_grad:
                where = "the unit" if p.unit is not None else "the model's output"
                raise NotDifferentiableError(
                    f"{where} does not depend differentiably on "
                    f"{'layer ' + repr(self.layer) if self.layer else 'the inputs'} (it may be "
                    "computed before that layer, detached, or rounded), so "
                    f"{self.method!r} cannot run; attribute to an earlier layer"
                )
            (g,) = torch.autograd.grad(obj.sum(), p.z)
        return obj.detach(), g

    # -- batched evaluations -------------------------------------------------------------
    def _evaluate(self, r: torch.Tensor, pts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            p = self.forward(self.source(r), pts, grad=False)
            return p.z, self.objective(p, self.targets(r))

    def _ensure(self) -> None:
        if self._points is None and self._outputs is not None:
            # the objective is known (the model's score at the input): only the layer's
            # output is missing, and the passes can stop at the layer
            self._points = self.map_inputs(self.source(torch.arange(self.rows.shape[0], device=self.rows.device)))
            return
        zs: list[torch.Tensor] = []
        objs: list[torch.Tensor] = []

        def consume(_a: int, _b: int, res: tuple[torch.Tensor, torch.Tensor]) -> None:
            zs.append(res[0])
            objs.append(res[1])

        known = self._points

        def run(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            r = torch.arange(a, b, device=self.rows.device)
            return self._evaluate(r, None if known is None else known[a:b])

        run_chunked(
            run, self.rows.shape[0], consume=consume, batch_size=self.batch_size,
            model=self.model, key=self.key("forward", self.rows.shape[0]),
        )
        self._points = torch.cat(zs) if self._points is None else self._points
        self._outputs = torch.cat(objs)

    @property
    def points(self) -> torch.Tensor:
        """The explained points, (R, *point_shape)."""
        if self._points is None:
            self._ensure()
        assert self._points is not None
        return self._points

    def outputs(self, known: torch.Tensor | None = None) -> torch.Tensor:
        """The objective at the explained points (R,); ``known`` when the caller has it."""
        if self._outputs is None:
            # a layer space computes the same score as the plain model: reuse the caller's
            if known is not None and self.unit_module is None:
                self._outputs = known
            else:
                self._ensure()
        assert self._outputs is not None
        return self._outputs

    def map_inputs(self, other: torch.Tensor) -> torch.Tensor:
        """Other model inputs (baselines, background) as points of this space."""
        if self.module is None:
            if not other.is_floating_point():
                raise BaselineError(f"baselines must be float like the inputs, got {other.dtype}")
            return other

        def run(a: int, b: int) -> torch.Tensor:
            with torch.inference_mode():
                return self.forward(other[a:b], None, grad=False, points_only=True).z
        out = run_chunked(
            run, other.shape[0], batch_size=self.batch_size, model=self.model,
            key=self.key("forward", other.shape[0]),
        )
        assert out is not None
        return out

    def objective_at(self, r: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """Objective at points ``pts`` for space rows ``r`` (no gradients), chunked."""
        out = run_chunked(
            lambda a, b: self._evaluate(r[a:b], pts[a:b])[1], r.shape[0],
            batch_size=self.batch_size, model=self.model, key=self.key("forward", r.shape[0]),
        )
        assert out is not None
        return out

    # -- results -------------------------------------------------------------------------
    def reduce(self, v: torch.Tensor) -> torch.Tensor:
        """For token ids, sum values over the hidden axes: (R, T, H, ...) -> (R, T)."""
        if self.text and v.ndim > 2 and v.shape[1] == self.inputs.shape[1]:
            return v.sum(dim=tuple(range(2, v.ndim)))
        return v

    def finish(self, result: Partial) -> Partial:
        """Reduce values for token ids (sum over hidden axes) and record the space in meta.

        Stochastic methods reduce each sample first (so their stderr is per token).
        """
        result.values = self.reduce(result.values)
        if self.layer is not None:
            result.add(meta={"layer": self.layer, "layer_shape": list(self.points.shape[1:])})
        if self.neuron_label is not None:
            result.add(meta={"neuron": self.neuron_label})
        return result


def out_rows(out: Any) -> int:
    return int(_first_tensor(out).shape[0])
