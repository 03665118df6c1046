"""Activations at a layer, and gradients of a class score with respect to them.

Both go through one forward hook that swaps the layer's output for a detached leaf that requires
grad, so gradients reach it whatever the parameters' ``requires_grad`` (the model runs under
:func:`unveil.core.hooks.model_guard`: eval mode, frozen parameters, both restored after). Hooks
are removed in ``finally``. Activations are pooled per example: ``"flatten"`` keeps every unit,
``"mean"`` averages over positions (the axes between the batch and the channels: ``(N, T, d)``
over ``T``; ``(N, C, H, W)`` over ``H, W``). Along a pooled direction, the directional derivative
of a mean-pooled layer is the gradient summed over positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.hooks import first_tensor, forward_hooks
from ..errors import InputError, ModelError, TargetError

__all__ = ["Examples", "LayerProbe", "pool_activation", "pool_gradient"]

#: A set of examples: a batch (tensor or array) or a list of single examples of varying length.
Examples = Any


def pool_activation(a: torch.Tensor, pool: str) -> torch.Tensor:
    """``(N, ...)`` layer output -> ``(N, D)`` per the pooling rule."""
    if pool == "flatten" or a.ndim == 2:
        return a.reshape(a.shape[0], -1)
    if a.ndim == 3:  # (N, T, d): tokens
        return a.mean(dim=1)
    return a.reshape(a.shape[0], a.shape[1], -1).mean(dim=-1)  # (N, C, ...): channels


def pool_gradient(g: torch.Tensor, pool: str) -> torch.Tensor:
    """The gradient with respect to the pooled activation's direction (sum over positions)."""
    if pool == "flatten" or g.ndim == 2:
        return g.reshape(g.shape[0], -1)
    if g.ndim == 3:
        return g.sum(dim=1)
    return g.reshape(g.shape[0], g.shape[1], -1).sum(dim=-1)


def _logits(out: Any) -> torch.Tensor:
    t = out.logits if hasattr(out, "logits") else out
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        t = t[0]
    if not isinstance(t, torch.Tensor):
        raise ModelError(f"the model returned {type(out).__name__}; expected a tensor of scores")
    if t.ndim == 3:  # (N, T, V): a language model's scores at the last position
        t = t[:, -1]
    if t.ndim != 2:
        raise ModelError(f"the model returned scores of shape {tuple(t.shape)}; TCAV needs one "
                         "row of class scores per input, (N, K)")
    return t


class LayerProbe:
    """Runs a module and records (and differentiates at) one of its layers."""

    def __init__(self, module: nn.Module, layer: nn.Module, pool: str, batch_size: int) -> None:
        self.module, self.layer, self.pool, self.batch_size = module, layer, pool, batch_size
        self.device = next((p.device for p in module.parameters()), torch.device("cpu"))
        self.dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()),
                          torch.float32)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return x.to(device=self.device, dtype=self.dtype)
        return x.to(device=self.device)

    def _run(self, x: torch.Tensor, *, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        seen: list[torch.Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
            t = first_tensor(out)
            leaf = t.detach().requires_grad_(grad)
            seen.append(leaf)
            if isinstance(out, torch.Tensor):
                return leaf
            if isinstance(out, tuple):
                return (leaf, *out[1:])
            if isinstance(out, list):
                return [leaf, *out[1:]]
            raise ModelError(f"cannot differentiate at a layer returning {type(out).__name__}")

        with forward_hooks([(self.layer, hook)]), torch.set_grad_enabled(grad):
            try:
                out = self.module(self._prepare(x))
            except (ModelError, InputError):
                raise
            except Exception as exc:
                first = (str(exc).splitlines() or [""])[0]
                raise InputError(f"the model rejected inputs of shape {tuple(x.shape)}: "
                                 f"{type(exc).__name__}: {first}. Pass examples shaped like the "
                                 "model's inputs") from exc
        if not seen:
            raise ModelError("the layer was not run by the model's forward pass; pick a layer "
                             "the forward pass uses")
        return seen[0], _logits(out)

    def activations(self, examples: Examples) -> torch.Tensor:
        """Pooled activations ``(N, D)`` (float64, CPU) of a batch or a list of examples."""
        parts = []
        for chunk in _chunks(examples, self.batch_size):
            a, _ = self._run(chunk, grad=False)
            parts.append(pool_activation(a, self.pool).detach().to("cpu", torch.float64))
        return torch.cat(parts)

    def gradients(self, inputs: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gradients (N, D) float64, logits (N, K))`` of the target score at the layer."""
        grads, outs = [], []
        for chunk in _chunks(inputs, self.batch_size):
            leaf, logits = self._run(chunk, grad=True)
            k = logits.shape[1]
            if not 0 <= target < k:
                raise TargetError(f"target {target} is out of range: the model returns {k} scores "
                                  f"per row, so the target must be in [0, {k - 1}]")
            if not logits.requires_grad:
                raise ModelError("the model's scores do not depend differentiably on the layer's "
                                 "output; TCAV needs gradients at the layer")
            (g,) = torch.autograd.grad(logits[:, target].sum(), leaf)
            grads.append(pool_gradient(g, self.pool).detach().to("cpu", torch.float64))
            outs.append(logits.detach().to("cpu"))
        return torch.cat(grads), torch.cat(outs)


def _chunks(examples: Examples, size: int) -> list[torch.Tensor]:
    if isinstance(examples, list):
        return [torch.as_tensor(np.asarray(e))[None] for e in examples]
    x = torch.as_tensor(examples)
    return [x[i:i + size] for i in range(0, x.shape[0], size)]


def as_examples(x: Any, name: str) -> torch.Tensor | list[torch.Tensor]:
    """A batch tensor, or a list of 1-example tensors when given sequences of varying length."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).detach().cpu()
        if t.ndim < 2:
            raise InputError(f"{name} must be a batch with a leading example axis, e.g. (N, C, H, "
                             f"W) images, (N, F) rows or (N, T) token ids; got shape "
                             f"{tuple(t.shape)}")
        _check_finite(t, name)
        return t
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        items = [torch.as_tensor(np.asarray(e)) for e in x]
        if not items:
            return torch.zeros(0, 1)
        shapes = {tuple(e.shape) for e in items}
        if len(shapes) == 1:
            t = torch.stack(items)
            _check_finite(t, name)
            return t
        if any(e.ndim != 1 or e.is_floating_point() for e in items):
            raise InputError(f"{name}: examples of different shapes are only allowed for token-id "
                             f"spans (1-D integer sequences); got shapes {sorted(shapes)[:4]}")
        return items
    raise InputError(f"{name} must be a tensor, an array or a list of examples; got "
                     f"{type(x).__name__}")


def _check_finite(t: torch.Tensor, name: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} contain NaN or infinite values; clean them first")
