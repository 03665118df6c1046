"""Canonizers: rewrite a copy of the model into an equivalent form the LRP rules apply to.

LRP rules are defined for linear layers followed by element-wise activations. Two common parts
of networks break that form (Kohlbrenner et al., 2020; Anders et al., 2021):

- a batch norm after a linear layer is an affine map of its own; :class:`MergeBatchNorm` folds
  it into that layer's weight and bias and replaces it with the identity; so is a batch norm
  that normalises the inputs of a dense layer (a table model's input standardisation), folded
  into that layer;
- a residual connection adds two relevance-carrying tensors, and the gradient would hand the
  full relevance to both summands; :class:`ResidualAddition` splits it in proportion to their
  contributions, ``R_a = a R / (a + b)``, ``R_b = b R / (a + b)`` (ε-stabilised) — unveil's
  addition rule, Zennit's ``Norm`` rule on its ``Sum`` module.

Canonizers only ever touch the private copy that :class:`~unveil.attribution.lrp.LRP` makes, and
the copy's outputs are checked to equal the model's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from ...core.hooks import forward_hooks
from ._functional import FunctionalRules

__all__ = ["Canonizer", "MergeBatchNorm", "ResidualAddition", "default_canonizers"]

_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class Canonizer:
    """Base: ``apply`` rewrites the copy in place; ``context`` is entered around its forward."""

    def apply(self, model: nn.Module, example: torch.Tensor) -> list[str]:
        """Rewrite ``model`` (a private copy) for inputs like ``example``; return what changed."""
        return []

    def context(self) -> AbstractContextManager[Any]:
        """A context active while relevance is computed (default: none)."""
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MergeBatchNorm(Canonizer):
    """Fold every batch norm whose input is the output of a dense or convolutional layer.

    The pairs are found by running the copy once on ``example`` and matching output tensors to
    input tensors, so they need not be neighbours in a ``Sequential``. A batch norm without
    running statistics (which would normalise with batch statistics) is left alone.
    """

    def apply(self, model: nn.Module, example: torch.Tensor) -> list[str]:
        """Fold the pairs; return ``"linear<-bn"`` (norm after) / ``"bn->linear"`` (before)."""
        done = []
        after, before = _linear_bn_pairs(model, example)
        for lin_name, bn_name in after:
            lin = model.get_submodule(lin_name)
            bn = model.get_submodule(bn_name)
            assert isinstance(bn, _BN)
            _fold(lin, bn)
            model.set_submodule(bn_name, nn.Identity())
            done.append(f"{lin_name}<-{bn_name}")
        for bn_name, lin_name in before:
            lin = model.get_submodule(lin_name)
            bn = model.get_submodule(bn_name)
            assert isinstance(bn, _BN) and isinstance(lin, nn.Linear)
            _fold_into_next(bn, lin)
            model.set_submodule(bn_name, nn.Identity())
            done.append(f"{bn_name}->{lin_name}")
        return done


class ResidualAddition(Canonizer):
    """Sum rule for additions of two relevance-carrying tensors in ``forward``.

    Parameters
    ----------
    stabilizer
        ``eps`` of the stabilised denominator ``a + b`` (default ``1e-6``).
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def context(self) -> AbstractContextManager[Any]:
        """Route tensor additions through the sum rule during the relevance pass."""
        return FunctionalRules(add_stabilizer=self.stabilizer, pass_activations=False)

    def __repr__(self) -> str:
        return f"ResidualAddition(stabilizer={self.stabilizer:g})"


def default_canonizers(stabilizer: float = 1e-6) -> list[Canonizer]:
    """``[MergeBatchNorm(), ResidualAddition(stabilizer)]``."""
    return [MergeBatchNorm(), ResidualAddition(stabilizer)]


def _linear_bn_pairs(
    model: nn.Module, example: torch.Tensor
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(linear, batch norm)`` names where the norm reads the layer's output, and ``(batch
    norm, dense)`` names where a norm not fed by a layer is read by a dense layer (nothing else
    of the hooked modules reading it); each module run once."""
    names = {id(m): n for n, m in model.named_modules() if n}
    calls: dict[str, int] = {}
    produced: dict[int, str] = {}
    normed: dict[int, str] = {}  # outputs of batch norms that did not follow a linear layer
    readers: dict[int, int] = {}
    keep: list[torch.Tensor] = []  # keep outputs alive so their ids stay unique
    pairs: list[tuple[str, str]] = []
    before: list[tuple[str, str]] = []

    def hook(m: nn.Module, inputs: Any, out: Any) -> None:
        name = names[id(m)]
        calls[name] = calls.get(name, 0) + 1
        if inputs and isinstance(inputs[0], torch.Tensor):
            readers[id(inputs[0])] = readers.get(id(inputs[0]), 0) + 1
        if isinstance(m, _LINEAR) and isinstance(out, torch.Tensor):
            if isinstance(m, nn.Linear) and inputs and id(inputs[0]) in normed:
                before.append((normed[id(inputs[0])], name))
            produced[id(out)] = name
            keep.append(out)
        elif isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None:
            if inputs and id(inputs[0]) in produced:
                pairs.append((produced[id(inputs[0])], name))
            elif isinstance(out, torch.Tensor):
                normed[id(out)] = name
                keep.append(out)

    mods: list[tuple[nn.Module, Callable[..., Any]]] = [
        (m, hook) for m in model.modules() if isinstance(m, (*_LINEAR, *_BN)) and id(m) in names
    ]
    with torch.no_grad(), forward_hooks(mods):
        model(example)
    out_of = {name: i for i, name in normed.items()}
    once = [(a, b) for a, b in pairs if calls[a] == 1 and calls[b] == 1]
    first = [(a, b) for a, b in before
             if calls[a] == 1 and calls[b] == 1 and readers.get(out_of[a], 0) == 1]
    return once, first


def _affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch norm in eval mode as ``s * x + shift`` per channel: ``(s, shift)``."""
    assert isinstance(bn, _BN)
    assert bn.running_var is not None and bn.running_mean is not None
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fold_into_next(bn: nn.Module, lin: nn.Linear) -> None:
    """``W' = W * s`` (per input column), ``b' = b + W @ shift`` for a norm ``s * x + shift``."""
    with torch.no_grad():
        scale, shift = _affine(bn)
        w = lin.weight
        old_b = lin.bias if lin.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        lin.bias = nn.Parameter(old_b + w @ shift, requires_grad=False)
        lin.weight = nn.Parameter(w * scale.reshape(1, -1), requires_grad=False)


def _fold(lin: nn.Module, bn: nn.Module) -> None:
    """``W' = W * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``."""
    assert isinstance(lin, _LINEAR)
    with torch.no_grad():
        scale, shift = _affine(bn)
        w = lin.weight
        new_w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        old_b = lin.bias if lin.bias is not None else torch.zeros_like(scale)
        lin.weight = nn.Parameter(new_w, requires_grad=False)
        lin.bias = nn.Parameter(old_b * scale + shift, requires_grad=False)
