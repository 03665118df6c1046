"""Autograd functions that carry relevance backwards in place of the gradient.

Relevance travels as the "gradient" of a single backward pass over the canonized copy of the
model. Each wrapped layer's forward returns exactly the layer's output and computes whatever the
rule's denominators need (one extra linear map per modified term; terms whose modified input is
all zero — ``x⁻`` after a ReLU — are skipped); its backward maps output relevance to input
relevance with the layer's explicit transpose. No layer is re-run during the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .rules import (
    Rule,
    Term,
    keep_input,
    keep_params,
    negative_input,
    ones_input,
    positive_input,
    stabilize,
)

__all__ = [
    "LinearOp", "NormFn", "PassFn", "RuleFn", "SumFn", "apply_norm", "apply_pass", "apply_rule",
    "apply_sum", "linear_op",
]


def _safe_div(r: torch.Tensor, d: torch.Tensor, eps: float) -> torch.Tensor:
    """``r / stab(d)``; with ``eps = 0``, zero where ``d`` is zero."""
    d = stabilize(d, eps)
    if eps == 0:
        zero = d == 0
        return torch.where(zero, torch.zeros_like(r), r / torch.where(zero, torch.ones_like(d), d))
    return r / d


class LinearOp:
    """A dense or convolutional layer as a pure function of (input, weight, bias)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._explicit = True
        if isinstance(module, nn.Linear):
            return
        assert isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        self._nd = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(module)]
        self._explicit = module.padding_mode == "zeros" and not isinstance(module.padding, str)

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return F.linear(x, w, b)
        return m._conv_forward(x, w, b)  # type: ignore[operator,no-any-return]  # Conv*d method

    def transpose(self, g: torch.Tensor, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``J^T g`` of the map ``x -> layer(x; w, 0)``."""
        m: Any = self.module
        if isinstance(m, nn.Linear):
            return g @ w
        if self._explicit:  # the input gradient of the convolution, given the real input
            grads = torch.ops.aten.convolution_backward(
                g, x, w, None, list(m.stride), list(m.padding), list(m.dilation), False,
                [0] * self._nd, m.groups, [True, False, False],
            )
            return grads[0]  # type: ignore[no-any-return]  # untyped aten op
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(self.forward(xr, w, None), xr, g)
        return gx


def linear_op(module: nn.Module) -> LinearOp | None:
    """The op of a supported linear layer, else ``None``."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return LinearOp(module)
    return None


@dataclass
class _Plan:
    scale: float
    mask: torch.Tensor | None
    denom: torch.Tensor  # stab(D_g)
    eps: float
    terms: list[tuple[Term, torch.Tensor, bool]]  # (term, modified weight, input is x itself)


def _input_range(x: torch.Tensor, rule: Rule) -> tuple[bool, bool]:
    """Whether ``x >= 0`` and whether ``x <= 0`` everywhere, computed only if a term needs it."""
    kinds = {t.input for g in rule.groups for t in g.terms}
    if x.numel() == 0 or not kinds & {positive_input, negative_input}:
        return False, False
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        x = x.permute(0, 2, 3, 1)  # contiguous in this order: the reduction needs no copy
    lo, hi = torch.aminmax(x.reshape(-1))
    return bool(lo >= 0), bool(hi <= 0)


def _same_as_x(t: Term, nonneg: bool, nonpos: bool) -> bool:
    return t.input is keep_input or (t.input is positive_input and nonneg) or (
        t.input is negative_input and nonpos)


def _vanishes(t: Term, nonneg: bool, nonpos: bool) -> bool:
    """Whether a term's modified input is all zero (``x⁻`` of a non-negative input)."""
    return (t.input is negative_input and nonneg) or (t.input is positive_input and nonpos)


class RuleFn(torch.autograd.Function):
    """Forward: the layer's output. Backward: the rule's relevance redistribution."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: Any) -> torch.Tensor:  # noqa: D102
        rule: Rule = layer.rule
        op: LinearOp = layer.op
        out = op.forward(x, layer.inner.weight, layer.inner.bias)
        nonneg, nonpos = _input_range(x, rule)
        plans: list[_Plan] = []
        for grp in rule.groups:
            terms = [(t, _same_as_x(t, nonneg, nonpos)) for t in grp.terms
                     if not _vanishes(t, nonneg, nonpos)]
            if not terms:
                continue
            d: torch.Tensor | None = None
            if len(terms) == 1 and terms[0][0].input is keep_input and terms[0][0].params is keep_params:
                d = out  # the plain ε-rule: the denominator is the output itself
            else:
                for t, same in terms:
                    if t.input is ones_input:  # the same for every row: one row, expanded
                        z = op.forward(torch.ones_like(x[:1]), *layer.params(t.params)).expand_as(out)
                    else:
                        z = op.forward(x if same else t.input(x), *layer.params(t.params))
                    d = z if d is None else d + t.sign * z
                    if t.sign != 1 and d is z:
                        d = d * t.sign
            assert d is not None
            mask = None if grp.where is None else (out > 0 if grp.where == "positive" else out < 0)
            plans.append(_Plan(grp.scale, mask, stabilize(d, rule.stabilizer, grp.sign), rule.stabilizer,
                               [(t, layer.params(t.params)[0], same) for t, same in terms]))
        ctx.plans, ctx.op = plans, op
        ctx.save_for_backward(x)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # noqa: D102
        (x,) = ctx.saved_tensors
        total: torch.Tensor | None = None
        for p in ctx.plans:
            g = r / p.denom if p.eps else _safe_div(r, p.denom, 0.0)
            if p.scale != 1.0:
                g = g.mul_(p.scale)
            if p.mask is not None:
                g = g.mul_(p.mask)
            for term, w, same in p.terms:
                back = ctx.op.transpose(g, w, x)
                if term.input is not ones_input:
                    back = back.mul_(x if same else term.input(x))
                if total is None:
                    total = back if term.sign == 1 else back.mul_(term.sign)
                else:
                    total = total.add_(back, alpha=term.sign)
        return (torch.zeros_like(x) if total is None else total), None


class PassFn(torch.autograd.Function):
    """Forward ``fn(x)``; relevance passes unchanged."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # noqa: D102
        out = fn(x)
        return out.clone() if out is x else out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return r, None


class NormFn(torch.autograd.Function):
    """Forward ``fn(x)`` for a parameter-free linear ``fn``; backward ``x * J^T(R / stab(z))``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
                eps: float) -> torch.Tensor:  # noqa: D102
        out = fn(x)
        ctx.fn, ctx.eps = fn, eps
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: D102
        x, out = ctx.saved_tensors
        g = _safe_div(r, out, ctx.eps)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (back,) = torch.autograd.grad(ctx.fn(xr), xr, g)
        return x * back, None, None


class SumFn(torch.autograd.Function):
    """``a + b`` whose backward splits relevance in proportion: ``a R / stab(a + b)``, ``b R / ...``.

    With ``inplace=True`` it performs ``a += b`` (as ``out += identity`` in residual blocks).
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, eps: float, inplace: bool) -> torch.Tensor:  # noqa: D102
        if inplace:
            a0 = a.clone()
            out = a.add_(b)
            ctx.mark_dirty(a)
        else:
            a0, out = a, a + b
        ctx.eps = eps
        ctx.save_for_backward(a0, b, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:  # noqa: D102
        a, b, out = ctx.saved_tensors
        g = _safe_div(r, out, ctx.eps)
        return a * g, g.mul_(b), None, None


# typed entry points (``Function.apply`` is untyped in torch's stubs)
def apply_rule(x: torch.Tensor, layer: Any) -> torch.Tensor:
    """``layer``'s output, whose backward applies ``layer.rule``."""
    return RuleFn.apply(x, layer)  # type: ignore[no-untyped-call,no-any-return]  # untyped stub


def apply_pass(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(x)``; relevance passes unchanged."""
    return PassFn.apply(x, fn)  # type: ignore[no-untyped-call,no-any-return]  # untyped stub


def apply_norm(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], eps: float) -> torch.Tensor:
    """``fn(x)`` with the norm rule."""
    return NormFn.apply(x, fn, eps)  # type: ignore[no-untyped-call,no-any-return]  # untyped stub


def apply_sum(a: torch.Tensor, b: torch.Tensor, eps: float, inplace: bool) -> torch.Tensor:
    """``a + b`` (``a += b``) with the sum rule."""
    return SumFn.apply(a, b, eps, inplace)  # type: ignore[no-untyped-call,no-any-return]  # untyped stub
