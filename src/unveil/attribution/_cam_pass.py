"""Single-pass attributors: one forward pass gives both the scores and the attribution.

The base :class:`~unveil.attribution._base.Attributor` first evaluates the model under
``inference_mode`` to resolve the targets, then calls ``_attribute``. For methods that need just
one forward (and one backward) pass — CAMs, LRP — that first pass would cost a third of the
method again. A :class:`SinglePassAttributor` instead does its whole work in its first pass
(``_first_pass``): it runs the method's forward (with autograd) chunk by chunk, resolves the
targets of each chunk from its outputs exactly as the base does (``Model.resolve_targets``), and
hands the per-row results to ``_attribute`` in ``call.first_pass``, which only assembles them.
When the target cannot be resolved per chunk (a malformed sequence), the base's plain forward
runs and raises its usual error (or, for a target it does accept, the method runs after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.model import Model, TargetSpec
from ._base import Attributor, Call, FirstPass, Partial, refuse_options

__all__ = ["PassResult", "SinglePassAttributor"]


@dataclass
class PassResult:
    """What a single pass leaves for ``_attribute``: per-row tensors and facts."""

    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


class SinglePassAttributor(Attributor):
    """Base for methods whose attribution comes out of the same pass as the scores.

    Subclasses implement :meth:`_single_pass` ``(x, targets_for) -> (outputs, PassResult)`` where
    ``targets_for(out, a, b)`` gives the resolved targets of rows ``a..b`` from their scores, and
    :meth:`_assemble` ``(call, result, **kwargs) -> Partial`` building the method's result.
    """

    def _check_call_options(self, kwargs: dict[str, Any]) -> None:
        """Refuse call options before any work (a registered method's are checked already;
        this guards subclasses without a declaration; override to accept some)."""
        refuse_options(self.name, kwargs, ("target",))

    def _first_pass(self, x: torch.Tensor, target: TargetSpec, **kwargs: Any) -> FirstPass:
        self._check_call_options(kwargs)
        if not _sliceable(target, x.shape[0]):
            return super()._first_pass(x, target)  # the base resolves (or raises)
        model = self.model

        def targets_for(out: torch.Tensor, a: int, b: int) -> torch.Tensor | None:
            return model.resolve_targets(_slice_target(target, a, b), out)

        outputs, result = self._single_pass(x, targets_for)
        return FirstPass(outputs, model.resolve_targets(target, outputs), state=result)

    def _attribute(self, call: Call, **kwargs: Any) -> Partial:
        result = call.first_pass
        if not isinstance(result, PassResult):  # the targets came in a form only the base resolves
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
    ) -> Partial:  # pragma: no cover - abstract
        raise NotImplementedError


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
