"""LRP rules for operations written as functions inside a model's ``forward``.

Residual connections are additions in ``forward`` (``y + self.short(x)``), not modules, and
many models call ``F.relu`` or ``F.avg_pool2d`` directly. While the relevance forward pass runs,
a :class:`~torch.overrides.TorchFunctionMode` routes these calls through the matching rule:

- ``a + b`` (and ``a += b``) of two same-shaped tensors that both carry relevance: the sum rule
  ``R_a = a R / stab(a + b)``, ``R_b = b R / stab(a + b)`` (Zennit's ``Norm`` on a ``Sum``);
- average pooling and ``mean`` over given axes: the norm rule (ε on the pooling itself);
- element-wise activations and ``batch_norm``: relevance passes unchanged.

Only calls made with gradients enabled on tensors that require them are touched, so the
computations inside the rules' own autograd functions are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ._functions import apply_norm, apply_pass, apply_sum

__all__ = ["FunctionalRules"]

_T = torch.Tensor
_PASS: frozenset[Callable[..., Any]] = frozenset({
    F.relu, torch.relu, _T.relu, F.leaky_relu, F.gelu, F.silu, F.elu, F.selu, F.celu, F.mish,
    F.softplus, F.hardtanh, F.relu6, F.hardswish, torch.sigmoid, _T.sigmoid, torch.tanh, _T.tanh,
    F.batch_norm,
})
_POOL: frozenset[Callable[..., Any]] = frozenset({
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
})
_MEAN: frozenset[Callable[..., Any]] = frozenset({torch.mean, _T.mean})
_ADD: frozenset[Callable[..., Any]] = frozenset({torch.add, _T.add, _T.__add__, _T.__radd__})
_IADD: frozenset[Callable[..., Any]] = frozenset({_T.add_, _T.__iadd__})


class FunctionalRules(TorchFunctionMode):
    """Apply LRP rules to functional calls (see the module docstring).

    Parameters
    ----------
    add_stabilizer
        Stabiliser of the sum rule for residual additions; ``None`` leaves additions to the
        gradient (each summand then receives the whole relevance).
    pool_stabilizer
        Stabiliser of the norm rule for functional average pooling; ``None``: gradient.
    pass_activations
        Let relevance pass unchanged through functional activations.
    """

    def __init__(self, *, add_stabilizer: float | None = None, pool_stabilizer: float | None = None,
                 pass_activations: bool = True) -> None:
        super().__init__()
        self.add_stabilizer = add_stabilizer
        self.pool_stabilizer = pool_stabilizer
        self.pass_activations = pass_activations

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        x = args[0] if args else None
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad):
            return func(*args, **kwargs)
        rest = args[1:]
        if self.pass_activations and func in _PASS:
            kw = {**kwargs, "inplace": False} if "inplace" in kwargs else kwargs
            return apply_pass(x, lambda t: func(t, *rest, **kw))
        if self.pool_stabilizer is not None and (
            func in _POOL or (func in _MEAN and (rest or "dim" in kwargs))
        ):
            return apply_norm(x, lambda t: func(t, *rest, **kwargs), self.pool_stabilizer)
        if self.add_stabilizer is not None and (func in _ADD or func in _IADD) and _summable(rest, kwargs, x):
            return apply_sum(x, rest[0], self.add_stabilizer, func in _IADD)
        return func(*args, **kwargs)


def _summable(rest: tuple[Any, ...], kwargs: dict[str, Any], x: torch.Tensor) -> bool:
    if len(rest) != 1 or set(kwargs) - {"alpha"} or kwargs.get("alpha", 1) != 1:
        return False
    y = rest[0]
    return isinstance(y, torch.Tensor) and y.requires_grad and y.shape == x.shape
