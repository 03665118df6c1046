"""Guided backpropagation for Guided Grad-CAM."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..core.batching import BatchSize, map_chunked
from ..core.hooks import forward_hooks
from ._base import Call

__all__ = ["guided_backprop"]


def guided_backprop(call: Call, *, batch_size: BatchSize, name: str) -> torch.Tensor:
    """Guided backpropagation of the call's targets, shaped like the inputs.

    Uses the ``guided_backprop`` method (:mod:`unveil.attribution.modified_backward`) when it is
    available, else a minimal private version.
    """
    try:
        from .modified_backward import GuidedBackprop
    except ImportError:  # pragma: no cover - the sibling module ships with unveil
        return _private_guided_backprop(call, batch_size=batch_size, name=name)
    exp = GuidedBackprop(call.model, batch_size=batch_size)(call.x, target=call.targets)
    return torch.as_tensor(exp.values, device=call.x.device, dtype=call.x.dtype)


def _private_guided_backprop(call: Call, *, batch_size: BatchSize, name: str) -> torch.Tensor:
    """Gradients through ``nn.ReLU`` modules that pass only positive gradients (Springenberg
    et al., 2015). Functional ReLUs inside ``forward`` keep their ordinary gradient."""
    module = call.model.module
    assert module is not None

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(lambda g: g.clamp(min=0))  # type: ignore[no-untyped-call]  # torch stub

    relus: list[tuple[torch.nn.Module, Callable[..., Any]]] = [
        (m, hook) for m in module.modules() if isinstance(m, torch.nn.ReLU)
    ]
    x, t = call.x, call.targets

    def run(a: int, b: int) -> torch.Tensor:
        return call.model.gradient(x[a:b], None if t is None else t[a:b], method=name)[1]

    with forward_hooks(relus) if relus else contextlib.nullcontext():
        return map_chunked(run, x.shape[0], batch_size=batch_size, model=call.model,
                           grad=True, key=("guided_backprop", tuple(x.shape[1:])))
