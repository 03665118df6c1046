"""Small helpers shared by the feature-visualization routines: options, bounds, gradients."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.model import Model
from ..errors import InputError, OptionError

__all__ = ["check_differentiable", "check_shape", "positive_int", "positive_float", "resolve_bounds"]


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1, or an :class:`OptionError` naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def steps_alias(n_steps: Any, steps: Any) -> Any:
    """``steps`` when given (an older name), else ``n_steps`` (the library's budget keyword)."""
    return n_steps if steps is None else steps


def positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (or >= 0), or an :class:`OptionError`."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) < 0 or (float(value) == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise OptionError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """A batch shape: at least (N, F), all positive ints."""
    try:
        s = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise OptionError(f"shape must be a tuple of ints like (1, 3, 64, 64), got {shape!r}") from None
    if len(s) < 2 or any(v < 1 for v in s):
        raise OptionError(
            f"shape must be a batch shape with a leading batch axis, e.g. (1, 3, 64, 64) for one "
            f"image or (1, 30) for one table row, with positive sizes; got {shape!r}"
        )
    return s


def _as_bound(v: Any, sample_shape: tuple[int, ...], model: Model, which: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64))
    if not bool(torch.isfinite(t).all()):
        raise OptionError(f"the {which} bound must be finite, got {v!r}")
    try:
        t = t.expand(*sample_shape) if t.ndim <= len(sample_shape) else t.view(-1)[:0]
    except RuntimeError:
        t = t.view(-1)[:0]
    if t.shape != torch.Size(sample_shape):
        raise OptionError(
            f"the {which} bound of shape {tuple(np.shape(np.asarray(v)))} does not broadcast to "
            f"one sample's shape {sample_shape}"
        )
    return t.unsqueeze(0).to(device=model.device, dtype=model.dtype).contiguous()


def resolve_bounds(
    bounds: Any, sample_shape: tuple[int, ...], model: Model, *, default: tuple[float, float] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` tensors of shape (1, *sample_shape): the box the input must stay in.

    ``bounds`` is ``(low, high)`` with numbers or arrays broadcastable to one sample (e.g. the
    training data's per-feature minimum and maximum), or ``None`` for ``default``.
    """
    if bounds is None:
        if default is None:
            raise OptionError(
                "these inputs are not images, so there is no natural value range: pass "
                "bounds=(low, high), e.g. the training data's per-feature range "
                "bounds=(X.min(0).values, X.max(0).values)"
            )
        bounds = default
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise OptionError(f"bounds must be a pair (low, high), got {bounds!r}")
    low = _as_bound(bounds[0], sample_shape, model, "lower")
    high = _as_bound(bounds[1], sample_shape, model, "upper")
    if bool((high <= low).any()):
        raise OptionError("bounds must satisfy low < high everywhere; got low >= high somewhere")
    return low, high


def check_differentiable(model: Model, probe: torch.Tensor, what: str) -> None:
    """Raise unless gradients of the model's outputs w.r.t. its inputs can be taken."""
    if model.backend == "auto":
        with torch.no_grad():
            model.forward(probe[:1])
    model.require_gradients(what)
    if not probe.is_floating_point():
        raise InputError(f"{what} optimises a float input, got {probe.dtype}")
