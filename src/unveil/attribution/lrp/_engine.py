"""Turn a copy of the user's model into one whose backward pass computes relevance.

``prepare`` deep-copies the model, applies the composite's canonizers, checks that the copy
still computes the same outputs, and overrides the ``forward`` of each layer that has a rule
(on the copy's module instances only) so that it runs through the rule's autograd function.
What the user should hear about (no rule for a layer, folding undone) is kept in
``Prepared.warnings`` for the caller to issue on every use, since a prepared copy is reused.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...core.hooks import copy_module, forward_pre_hooks
from ...core.model import Model
from ...errors import ModelError
from .._cam_layers import preferred_format
from ._functional import FunctionalRules
from ._functions import apply_norm, apply_pass, apply_rule, linear_op
from .canonizers import Canonizer, MergeBatchNorm
from .composites import Composite
from .rules import ParamModifier, Rule

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """The relevance-ready copy of a model and what was done to it."""

    module: nn.Module
    canonizers: list[Canonizer]
    rules: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)
    pool_stabilizer: float = 1e-6
    memory_format: torch.memory_format = torch.contiguous_format
    warnings: list[str] = field(default_factory=list)
    # the copy is shared (cached per model): one relevance pass at a time runs through it
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @contextlib.contextmanager
    def relevance_mode(self) -> Iterator[None]:
        """Functional rules and canonizer contexts, for the relevance forward pass (one thread
        at a time: the rules keep per-pass state on the shared copy's layers)."""
        with self.lock, contextlib.ExitStack() as stack:
            stack.enter_context(FunctionalRules(pool_stabilizer=self.pool_stabilizer))
            for c in self.canonizers:
                stack.enter_context(c.context())
            yield


class _LayerState:
    """What a rule's autograd function needs of one layer: the rule, the op, the params."""

    def __init__(self, module: nn.Module, rule: Rule) -> None:
        op = linear_op(module)
        assert op is not None
        self.inner: Any = module
        self.rule, self.op = rule, op
        self._params: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def params(self, mod: ParamModifier) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Modified (weight, bias), computed once per modifier."""
        key = id(mod)
        if key not in self._params:
            w, b = self.inner.weight, self.inner.bias
            assert isinstance(w, torch.Tensor)
            self._params[key] = (mod(w.detach(), "weight"),
                                 None if b is None else mod(b.detach(), "bias"))
        return self._params[key]


def _wants_relevance(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return (len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            and torch.is_grad_enabled() and args[0].requires_grad)


def _override(module: nn.Module, rule: Rule) -> None:
    """Replace ``module.forward`` (an instance attribute on the copy) by the rule's version."""
    orig: Callable[..., Any] = module.forward
    if rule.kind == "lrp":
        state = _LayerState(module, rule)

        def forward(*args: Any, **kwargs: Any) -> Any:
            if not _wants_relevance(args, kwargs):
                return orig(*args, **kwargs)
            return apply_rule(args[0], state)
    elif rule.kind == "gradient":
        def forward(*args: Any, **kwargs: Any) -> Any:
            with torch._C.DisableTorchFunction():  # no functional rules inside this layer
                return orig(*args, **kwargs)
    else:
        eps = rule.stabilizer

        def forward(*args: Any, **kwargs: Any) -> Any:
            if not _wants_relevance(args, kwargs):
                return orig(*args, **kwargs)
            if rule.kind == "pass":
                return apply_pass(args[0], orig)
            return apply_norm(args[0], orig, eps)
    object.__setattr__(module, "forward", forward)


def _execution_order(module: nn.Module, example: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Names of the modules in the order they are called, and the output, for ``example``."""
    names = {id(m): n for n, m in module.named_modules() if n}
    order: list[str] = []

    def pre(m: nn.Module, _i: Any) -> None:
        order.append(names[id(m)])

    with torch.no_grad(), forward_pre_hooks([(m, pre) for m in module.modules() if id(m) in names]):
        out = Model(module).forward(example)
    return order, out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    tol = 1e-4 if a.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
    scale = float(a.abs().max()) if a.numel() else 1.0
    return a.shape == b.shape and bool(((a - b).abs() <= tol * max(scale, 1.0)).all())


def _copy(module: nn.Module) -> nn.Module:
    try:
        dup = copy_module(module)
    except Exception as exc:
        raise ModelError(
            f"LRP works on a copy of the model, but copy.deepcopy failed ({exc}); make the model "
            "deep-copyable (no open files or locks as attributes)"
        ) from exc
    for m in dup.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            setattr(m, "inplace", False)  # noqa: B010  # in-place ops would overwrite what the rules keep
    return dup


def prepare(module: nn.Module, example: torch.Tensor, composite: Composite) -> Prepared:
    """The relevance-ready copy of ``module`` for inputs like ``example`` (one row)."""
    _, reference = _execution_order(module, example)
    cans = list(composite.canonizers)
    dup = _copy(module)
    changes = [c for can in cans for c in can.apply(dup, example)]
    order, out = _execution_order(dup, example)
    notes: list[str] = []
    if not _same(reference, out):
        notes.append(
            "folding batch norms changed the model's outputs (a layer's output is used by more "
            "than its batch norm); LRP continues without folding"
        )
        cans = [c for c in cans if not isinstance(c, MergeBatchNorm)]
        dup = _copy(module)
        changes = [c for can in cans for c in can.apply(dup, example)]
        order, _ = _execution_order(dup, example)
    fmt = preferred_format(dup, example)
    if fmt is torch.channels_last:
        dup = dup.to(memory_format=fmt)  # type: ignore[call-overload]  # accepted at run time
    prepared = Prepared(dup, cans, changes=changes, pool_stabilizer=composite.stabilizer,
                        memory_format=fmt, warnings=notes)
    _assign_rules(prepared, composite, order)
    return prepared


def _assign_rules(prepared: Prepared, composite: Composite, order: list[str]) -> None:
    dup = prepared.module
    firsts = composite.first_types()
    first = next((n for n in order if n not in composite.name_map
                  and firsts and isinstance(dup.get_submodule(n), firsts)), None)
    for name, m in list(dup.named_modules()):
        if not name:
            continue
        rule = composite.rule_for(name, m, first=name == first)
        if rule is None:
            if not list(m.children()) and any(True for _ in m.parameters(recurse=False)):
                prepared.unhandled.append(f"{name} ({type(m).__name__})")
            continue
        if rule.kind == "lrp" and linear_op(m) is None:
            raise ModelError(
                f"LRP rule {rule.name!r} was mapped to layer {name!r} ({type(m).__name__}), but "
                "such rules apply to Linear and Conv1d/2d/3d layers only"
            )
        _override(m, rule)
        prepared.rules[name] = rule.name
    if prepared.unhandled:
        prepared.warnings.append(
            "LRP has no rule for " + ", ".join(prepared.unhandled) + "; relevance follows the "
            "gradient through them (map them in a Composite to choose one)"
        )
