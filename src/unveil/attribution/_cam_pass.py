"""Single-pass attributors: one forward pass gives both the scores and the attribution.

:class:`~unveil.attribution._base.Attributor` first evaluates the model under ``inference_mode``
to resolve the targets, then calls ``_attribute``. For methods that need just one forward (and one
backward) pass — CAMs, LRP — that first pass would cost a third of the method again. A
:class:`SinglePassAttributor` instead does its whole work inside that first pass: ``predict`` runs
the method's forward (with autograd) chunk by chunk, resolves the targets of each chunk from its
outputs exactly as the base does (``Model.resolve_targets``), keeps the per-row results, and
returns the scores; ``_attribute`` then only assembles them. When the target cannot be resolved
per chunk (a malformed sequence), the base's plain forward runs and raises its usual error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.explanation import Explanation
from ..core.model import Model, TargetSpec
from ._base import Attributor, Call, refuse_options

__all__ = ["PassResult", "SinglePassAttributor"]


@dataclass
class PassResult:
    """What a single pass leaves for ``_attribute``: per-row tensors and facts."""

    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Pending:
    target: TargetSpec
    kwargs: dict[str, Any]
    used: bool = False
    result: PassResult | None = None


class SinglePassAttributor(Attributor):
    """Base for methods whose attribution comes out of the same pass as the scores.

    Subclasses implement :meth:`_single_pass` ``(x, targets_for) -> (outputs, PassResult)`` where
    ``targets_for(out, a, b)`` gives the resolved targets of rows ``a..b`` from their scores, and
    :meth:`_assemble` ``(call, result, **kwargs) -> dict`` building the ``_attribute`` result.
    """

    def _run(
        self, inputs: Any, *, target: TargetSpec = "predicted", **kwargs: Any
    ) -> Explanation:
        self._check_call_options(kwargs)
        calls = _calls()
        key = id(self)
        outer = calls.get(key)
        calls[key] = _Pending(target=target, kwargs=kwargs)
        try:
            return super()._run(inputs, target=target, **kwargs)
        finally:
            if outer is None:
                del calls[key]
            else:
                calls[key] = outer

    @property
    def _pending(self) -> _Pending | None:
        """The state of this thread's call in progress (``None`` outside a call)."""
        return _calls().get(id(self))

    def _check_call_options(self, kwargs: dict[str, Any]) -> None:
        """Refuse call options before any work (a registered method's are checked already;
        this guards subclasses without a declaration; override to accept some)."""
        refuse_options(self.name, kwargs, ("target",))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        p = self._pending
        if p is None or p.used or not _sliceable(p.target, x.shape[0]):
            return super().predict(x)
        p.used = True
        model = self.model
        spec = p.target

        def targets_for(out: torch.Tensor, a: int, b: int) -> torch.Tensor | None:
            return model.resolve_targets(_slice_target(spec, a, b), out)

        with torch.inference_mode(False):
            outputs, p.result = self._single_pass(x, targets_for)
        return outputs

    def _attribute(self, call: Call, **kwargs: Any) -> dict[str, Any]:
        p = self._pending
        result = None if p is None else p.result
        if result is None:  # the targets were given in a form only the base resolves
            t = call.targets

            def targets_for(out: torch.Tensor, a: int, b: int) -> torch.Tensor | None:
                return None if t is None else t[a:b]

            _, result = self._single_pass(call.x, targets_for)
        return self._assemble(call, result, **kwargs)

    # -- to implement ---------------------------------------------------------------------
    def _single_pass(
        self, x: torch.Tensor, targets_for: Any
    ) -> tuple[torch.Tensor, PassResult]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _assemble(
        self, call: Call, result: PassResult, **kwargs: Any
    ) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


_local = threading.local()


def _calls() -> dict[int, _Pending]:
    """Calls in progress in this thread, by method instance (thread-safe instances)."""
    calls: dict[int, _Pending] | None = getattr(_local, "calls", None)
    if calls is None:
        calls = _local.calls = {}
    return calls


def _sliceable(target: TargetSpec, n: int) -> bool:
    """Whether ``target`` can be resolved chunk by chunk (else the base resolves and raises)."""
    if target is None or isinstance(target, (str, int, np.integer)):
        return True
    try:
        arr = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
    except Exception:
        return False
    return arr.ndim == 1 and arr.shape[0] == n and np.issubdtype(arr.dtype, np.integer)


def _slice_target(target: TargetSpec, a: int, b: int) -> TargetSpec:
    if target is None or isinstance(target, (str, int, np.integer)):
        return target
    if isinstance(target, torch.Tensor):
        return target[a:b]
    return np.asarray(target)[a:b]


def select_scores(out: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """The target score of each row (``Model.select``)."""
    return Model.select(out, targets)
