"""DeepLIFT with the Rescale rule, and DeepLIFT-SHAP over a background set.

Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation
Differences", ICML 2017; DeepLIFT-SHAP as in Lundberg & Lee, NeurIPS 2017.

Each attribution is ``(x - b) * m`` where the multipliers ``m`` come from a backward pass in
which every activation ``y = f(z)`` passes ``g * (f(z) - f(z_b)) / (z - z_b)`` instead of
``g * f'(z)`` (its ordinary derivative where ``|z - z_b| < eps``), and every max pooling uses
Captum's rule (the output difference split between the input's and the reference's maxima),
so that contributions sum to ``f(x) - f(b)`` through linear layers, residual additions,
batch norm in eval mode, ReLU-family activations and max pooling.

How: for a chunk of rows, a forward pass at the references records the input of every
activation and max pooling in call order; the forward pass at the inputs then routes each call,
in the same order, to a custom autograd function that knows its reference. Calls are caught
with a torch function mode (:mod:`unveil.attribution._override`), so in-place, reused and
functional activations are all handled and the model is never modified. Operations without a
rule (softmax, layer norm, adaptive max pooling, exp, ...) keep their ordinary gradient and a
warning says completeness will not hold exactly; attribute logits, not probabilities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..core.baselines import BaselineSpec
from ..core.batching import BatchSize, run_chunked
from ..core.options import Option
from ..core.registry import register
from ..errors import ModelError
from ._base import Attributor, Call, Partial
from ._layers import NeuronSpec, Space
from ._options import BASELINE, SPACE
from ._override import (
    ACTIVATION_OPS,
    ACTIVATIONS,
    Handler,
    parse_activation,
    require_python_model,
    swapped,
)
from ._refs import Refs, make_refs

__all__ = ["DeepLift", "DeepLiftShap"]

_POOLS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}
_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_WATCHED = ACTIVATION_OPS | {
    "max_pool1d", "max_pool2d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices",
}
_NO_RULE = frozenset(
    ["_softmax", "_log_softmax", "native_layer_norm", "native_group_norm", "adaptive_max_pool1d",
     "adaptive_max_pool2d", "adaptive_max_pool3d", "amax", "max", "exp", "log", "sqrt", "rsqrt",
     "pow", "erf", "sin", "cos", "sort", "topk"]
)


def _derivative(fn: Any, z: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(fn(zz).sum(), zz)
    return d.detach()


class _Rescale(torch.autograd.Function):
    """``f(z)`` forward; ``g * (f(z) - f(z_ref)) / (z - z_ref)`` backward."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, z_ref: torch.Tensor, fn: Any, inplace: bool, eps: float
    ) -> torch.Tensor:
        out: torch.Tensor = fn(z)
        dz = z - z_ref
        small = dz.abs() < eps
        m = (out - fn(z_ref)) / torch.where(small, torch.ones_like(dz), dz)
        if bool(small.any()):
            m = torch.where(small, _derivative(fn, z), m)
        ctx.save_for_backward(m)
        if inplace:
            z.copy_(out)
            ctx.mark_dirty(z)
            return z
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        (m,) = ctx.saved_tensors
        return grads[0] * m, None, None, None, None


def _scatter(v: torch.Tensor, idx: torch.Tensor, like: torch.Tensor, k: int) -> torch.Tensor:
    lead = like.shape[: like.ndim - k]
    out = torch.zeros((*lead, like.shape[like.ndim - k:].numel()), dtype=v.dtype, device=v.device)
    out.scatter_add_(-1, idx.reshape(*lead, -1), v.reshape(*lead, -1))
    return out.view_as(like)


class _MaxPoolRule(torch.autograd.Function):
    """Max pooling forward; DeepLIFT's (Captum's) max-pooling multipliers backward."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, z_ref: torch.Tensor, pool: Any, k: int, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, idx = pool(z)
        y_ref, idx_ref = pool(z_ref)
        ctx.save_for_backward(y, y_ref, idx, idx_ref, z - z_ref)
        ctx.k, ctx.eps = k, eps
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        y, y_ref, idx, idx_ref, dz = ctx.saved_tensors
        g, k = grads[0], ctx.k
        top = torch.maximum(y, y_ref)
        spread = _scatter(g * (top - y_ref), idx, dz, k) + _scatter(g * (y - top), idx_ref, dz, k)
        small = dz.abs() < ctx.eps
        m = torch.where(small, _scatter(g, idx, dz, k), spread / torch.where(small, 1.0, dz))
        return m, None, None, None, None


def _pool_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    params = dict(zip(_POOL_ARGS, args[1:]))
    params.update(kwargs)
    want_idx = bool(params.pop("return_indices", False))
    z = params.pop("input", args[0] if args else None)
    return z, (lambda t: func(t, **params, return_indices=True)), want_idx


class _Tape:
    """The references of one chunk: inputs of activations and poolings in call order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, torch.Tensor]] = []
        self.pos = 0

    def take(self, kind: str, z: torch.Tensor) -> torch.Tensor:
        if self.pos >= len(self.items):
            raise ModelError(_PATH_MSG)
        k, ref = self.items[self.pos]
        self.pos += 1
        if k != kind or tuple(ref.shape) != tuple(z.shape):
            raise ModelError(_PATH_MSG)
        return ref


_PATH_MSG = (
    "deeplift: the forward pass at the input called different activations or poolings than at "
    "the baseline (data-dependent control flow); DeepLIFT needs the same computation for both"
)


@contextlib.contextmanager
def _recording(tape: _Tape, method: str) -> Iterator[None]:
    def act(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tape.items.append(("act", parse_activation(func, args, kwargs).z.detach().clone()))
        return func(*args, **kwargs)

    def pool(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tape.items.append(("pool", _pool_call(func, args, kwargs)[0].detach().clone()))
        return func(*args, **kwargs)

    handlers: dict[Any, Handler] = {**{f: act for f in ACTIVATIONS}, **{f: pool for f in _POOLS}}
    with swapped(handlers, method=method, watched=frozenset()):
        yield


@contextlib.contextmanager
def _replaying(tape: _Tape, method: str, eps: float) -> Iterator[None]:
    def act(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        a = parse_activation(func, args, kwargs)
        return _Rescale.apply(a.z, tape.take("act", a.z), a.fn, a.inplace, eps)  # type: ignore[no-untyped-call]  # torch's Function.apply

    def pool(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        z, fn, want_idx = _pool_call(func, args, kwargs)
        y, idx = _MaxPoolRule.apply(  # type: ignore[no-untyped-call]  # torch's Function.apply
            z, tape.take("pool", z), fn, _POOLS[func], eps
        )
        return (y, idx) if want_idx else y

    handlers: dict[Any, Handler] = {**{f: act for f in ACTIVATIONS}, **{f: pool for f in _POOLS}}
    note = "; completeness (exp.delta ~ 0) will not hold exactly"
    with swapped(handlers, method=method, watched=_WATCHED, unsupported=_NO_RULE, note=note):
        yield
    if tape.pos != len(tape.items):
        raise ModelError(_PATH_MSG)


def deeplift_values(
    space: Space, refs: Refs, *, eps: float, batch_size: BatchSize, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLIFT values per space row (averaged over its references) and f at the references."""
    require_python_model(space.model.module, method)
    pts, m = space.points, refs.per_row
    values = torch.zeros_like(pts)
    f_ref = torch.empty(refs.pair_row.shape[0], dtype=pts.dtype, device=pts.device)
    def run(a: int, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = torch.arange(a, c, device=pts.device)
        r, ref = refs.pair_row[p], refs.points[refs.pair_ref[p]]
        tape = _Tape()
        with torch.no_grad():
            pb = space.forward(space.source(r), ref, grad=False,
                               context=lambda: _recording(tape, method))
            fb = space.objective(pb, space.targets(r)).detach()
        x_r = pts[r]
        _, g = space.gradient(r, x_r, context=lambda: _replaying(tape, method, eps))
        return (x_r - ref) * g / m, r, fb

    def consume(a: int, c: int, res: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        values.index_add_(0, res[1], res[0])
        f_ref[a:c] = res[2]

    run_chunked(
        run, refs.pair_row.shape[0], consume=consume, batch_size=batch_size, model=space.model,
        grad=True, key=space.key("deeplift", refs.pair_row.shape[0]),
    )
    return values, f_ref.view(-1, m).mean(dim=1)


_EPS = Option("eps", float, 1e-10, "below this |z - z_b| an activation passes its ordinary "
              "gradient", low=0)


@register("deeplift", family="gradient", needs_gradients=True, display_name="DeepLIFT",
          signed=True, takes_seed=True, common=("background",), options=(_EPS, BASELINE, *SPACE))
class DeepLift(Attributor):
    """DeepLIFT (Rescale rule): ``(x - b) * m`` with multipliers from a modified backward pass.

    Equals ``captum.attr.DeepLift`` (Rescale) on models whose activations are distinct,
    non-in-place modules, and stays correct for in-place, reused and functional ones.

    Parameters
    ----------
    eps : float
        Below this ``|z - z_b|`` an activation passes its ordinary gradient (default 1e-10,
        as Captum).
    batch_size : int or "auto"
        Rows per chunk.

    Call options: ``baseline=`` (default ``"zeros"``; see
    :class:`~unveil.attribution.path.IntegratedGradients`), ``background=`` to average over
    a set of baselines (DeepLIFT-SHAP), ``layer=``, ``neuron=``, ``seed=``. ``exp.delta``
    is the completeness gap ``sum(values) - (f(x) - f(b))``, zero up to rounding for
    networks built from the operations listed in :mod:`unveil.attribution.deeplift`.
    """

    _needs_background = False

    def __init__(self, model: Any, *, eps: float = 1e-10, batch_size: BatchSize = "auto") -> None:
        super().__init__(model, batch_size=batch_size)
        self.eps = eps

    def _attribute(
        self,
        call: Call,
        *,
        baseline: BaselineSpec = None,
        background: Any = None,
        layer: str | None = None,
        neuron: NeuronSpec = None,
        seed: int | None = None,
    ) -> Partial:
        call.model.require_gradients(self.name)
        require_python_model(call.model.module, self.name)
        space = Space.of_call(call, method=self.name, batch_size=self.batch_size, layer=layer,
                              neuron=neuron)
        res = self._attribute_space(space, baseline=baseline, background=background, seed=seed)
        res.seed = seed
        return space.finish(res)

    def _attribute_space(
        self,
        space: Space,
        *,
        baseline: BaselineSpec = None,
        background: Any = None,
        seed: int | None = None,
    ) -> Partial:
        """DeepLIFT values at every point of ``space``, with delta and baseline outputs."""
        refs = make_refs(space, baseline, background, seed=seed,
                         require_background=self._needs_background)
        values, fb = deeplift_values(space, refs, eps=self.eps, batch_size=self.batch_size,
                                     method=self.name)
        delta = values.flatten(1).sum(1) - (space.outputs() - fb)
        return Partial(values=values, baseline_outputs=fb, delta=delta,
                       params={"baseline": refs.label})


@register("deeplift_shap", family="gradient", needs_gradients=True,
          display_name="DeepLIFT-SHAP", signed=True, common=("background",),
          options=(_EPS, *SPACE))
class DeepLiftShap(DeepLift):
    """DeepLIFT-SHAP: DeepLIFT averaged over every row of a background set.

    Lundberg & Lee, NeurIPS 2017. Equals ``captum.attr.DeepLiftShap``. Call with
    ``background=`` (M, ...) reference inputs (required; no ``baseline=``), ``layer=``,
    ``neuron=``; costs M DeepLIFT passes per row. ``exp.delta`` compares with
    ``f(x) - mean f(b)``.
    """

    _needs_background = True

    def _attribute(  # type: ignore[override]  # the background replaces baseline= and seed=
        self,
        call: Call,
        *,
        background: Any = None,
        layer: str | None = None,
        neuron: NeuronSpec = None,
    ) -> Partial:
        return super()._attribute(call, background=background, layer=layer, neuron=neuron)
