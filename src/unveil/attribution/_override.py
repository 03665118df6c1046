"""Swap activation calls for custom autograd functions during a forward pass.

Modified-backward methods (guided backprop, deconvnet, DeepLIFT) change how gradients pass
through activations. Instead of hooking ``nn.ReLU`` modules, which is wrong for in-place
activations, for a module object called several times and for functional calls, a
:class:`~torch.overrides.TorchFunctionMode` sees every Python-level call of ``F.relu``,
``torch.relu``, ``Tensor.relu_``, ``nn.ReLU`` (which calls ``F.relu``) and friends while the
forward pass runs, and routes it to a handler. Nothing on the model changes.

Activations that do not pass through Python (a TorchScript submodule, a direct
``torch.ops.aten`` call) cannot be swapped; a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
counts the ATen activation ops that ran outside the handlers, and any such op raises
:class:`~unveil.errors.ModelError` instead of returning silently wrong values.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ModelError

__all__ = [
    "ACTIVATIONS", "RELUS", "Activation", "parse_activation", "require_python_model", "swapped",
]

Unary = Callable[[torch.Tensor], torch.Tensor]
Handler = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]

_aten = torch.ops.aten
# out-of-place builtins without an ``inplace`` parameter: f(input, *rest)
_PLAIN = frozenset([
    torch.relu, torch.Tensor.relu, torch.sigmoid, torch.Tensor.sigmoid, torch.tanh,
    torch.Tensor.tanh, F.gelu, F.softplus, F.logsigmoid, _aten.relu, _aten.relu.default,
    _aten.sigmoid, _aten.sigmoid.default, _aten.tanh, _aten.tanh.default,
])
# in-place builtins and the out-of-place function computing the same values
_INPLACE: dict[Any, Any] = {
    torch.relu_: torch.relu, torch.Tensor.relu_: torch.relu, _aten.relu_: torch.relu,
    _aten.relu_.default: torch.relu, torch.sigmoid_: torch.sigmoid,
    torch.Tensor.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh, torch.Tensor.tanh_: torch.tanh,
    F.elu_: F.elu, F.leaky_relu_: F.leaky_relu, F.hardtanh_: F.hardtanh,
}
# Python functions with an ``inplace=`` parameter
_WITH_FLAG = frozenset([
    F.relu, F.elu, F.leaky_relu, F.silu, F.hardtanh, F.relu6, F.mish, F.hardswish,
    F.hardsigmoid, F.selu, F.celu,
])
ACTIVATIONS: frozenset[Any] = frozenset([*_PLAIN, *_INPLACE, *_WITH_FLAG])
RELUS: frozenset[Any] = frozenset([
    torch.relu, torch.Tensor.relu, F.relu, torch.relu_, torch.Tensor.relu_, _aten.relu,
    _aten.relu.default, _aten.relu_, _aten.relu_.default,
])
RELU_OPS = frozenset(["relu", "relu_"])
ACTIVATION_OPS = frozenset(
    ["relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "gelu", "gelu_", "softplus",
     "log_sigmoid_forward", "elu", "elu_", "leaky_relu", "leaky_relu_", "silu", "silu_",
     "hardtanh", "hardtanh_", "mish", "mish_", "hardswish", "hardswish_", "hardsigmoid",
     "hardsigmoid_", "selu", "celu"]
)
_SIGS: dict[Any, inspect.Signature] = {}


class Activation:
    """A parsed activation call: its input, an out-of-place function, and whether in place."""

    __slots__ = ("fn", "inplace", "z")

    def __init__(self, z: torch.Tensor, fn: Unary, inplace: bool) -> None:
        self.z, self.fn, self.inplace = z, fn, inplace


def parse_activation(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    """Split an intercepted activation call into input, function and in-place flag."""
    if func in _PLAIN:
        rest = args[1:]
        return Activation(args[0], lambda t: func(t, *rest, **kwargs), False)
    if func in _INPLACE:
        base, rest = _INPLACE[func], args[1:]
        return Activation(args[0], lambda t: base(t, *rest, **kwargs), True)
    sig = _SIGS.get(func)
    if sig is None:
        sig = _SIGS[func] = inspect.signature(func)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    params = dict(bound.arguments)
    z = params.pop("input")
    inplace = bool(params.pop("inplace", False))
    return Activation(z, lambda t: func(t, **params, inplace=False), inplace)


def require_python_model(module: Any, method: str) -> None:
    """Refuse TorchScript modules, whose activations no Python-level swap can reach."""
    if module is not None and any(isinstance(m, torch.jit.ScriptModule) for m in module.modules()):
        raise ModelError(
            f"{method!r} modifies how gradients pass activations, which it cannot do inside "
            "TorchScript (torch.jit.script/trace) modules; explain the plain nn.Module instead"
        )


class _Swap(TorchFunctionMode):
    def __init__(self, handlers: dict[Any, Handler], guard: _Escapes) -> None:
        super().__init__()
        self.handlers, self.guard = handlers, guard

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        handler = self.handlers.get(func)
        if handler is None:
            return func(*args, **kwargs)
        self.guard.depth += 1
        try:
            return handler(func, args, kwargs)
        finally:
            self.guard.depth -= 1


class _Escapes(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's mode base is untyped
    """Counts ATen ops of interest that run outside the handlers."""

    def __init__(self, watched: frozenset[str], unsupported: frozenset[str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch's mode base is untyped
        self.watched, self.unsupported = watched, unsupported
        self.depth = 0
        self.escaped: Counter[str] = Counter()
        self.other: Counter[str] = Counter()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if self.depth == 0:
            name = func.overloadpacket.__name__
            if name in self.watched:
                self.escaped[name] += 1
            elif name in self.unsupported:
                self.other[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def swapped(
    handlers: dict[Any, Handler],
    *,
    method: str,
    watched: frozenset[str],
    unsupported: frozenset[str] = frozenset(),
    note: str = "",
) -> Iterator[None]:
    """Route the listed functions to ``handlers`` for the block; check nothing escaped.

    Raises :class:`ModelError` if an ATen op in ``watched`` ran outside the handlers; warns
    (once per block) for ops in ``unsupported``, which keep their ordinary gradient.
    """
    guard = _Escapes(watched, unsupported)
    with _Swap(handlers, guard), guard:
        yield
    if guard.escaped:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(guard.escaped.items()))
        raise ModelError(
            f"{method!r} cannot modify activations that do not pass through Python ({ops}): "
            "they run inside a TorchScript module or a direct torch.ops call. Explain the "
            "plain nn.Module (not scripted or traced) instead"
        )
    if guard.other:
        ops = ", ".join(sorted(guard.other))
        warnings.warn(
            f"{method}: the forward pass uses {ops}, which {method} has no rule for; they keep "
            f"their ordinary gradient{note}",
            UserWarning,
            stacklevel=2,
        )
