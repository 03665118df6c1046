"""Receptive fields: which input positions can influence a unit at a given position.

Computed by differentiation through a *copy* of the model whose weights are all positive
constants, biases zero, batch-norm statistics neutral and max-pooling replaced by average
pooling; on an all-ones input every activation is then positive, so no ReLU blocks a path and
no two paths cancel, and the input gradient's support is exactly the theoretical receptive field
(clipped at the borders). The user's model is never modified.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..core.hooks import StopForward, copy_module, first_tensor, forward_hooks, get_submodule

__all__ = ["receptive_boxes"]

_MAX_TO_AVG = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
             nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}


def _swap(m: nn.Module) -> nn.Module | None:
    kind = type(m)
    p: Any = m  # pooling modules keep their options as plain attributes
    if kind in _MAX_TO_AVG:
        if p.dilation not in (1, (1,), (1, 1), (1, 1, 1)):
            return None
        avg: nn.Module = _MAX_TO_AVG[kind](p.kernel_size, p.stride, p.padding, ceil_mode=p.ceil_mode)
        return avg
    if kind in _ADAPTIVE:
        adaptive: nn.Module = _ADAPTIVE[kind](p.output_size)
        return adaptive
    return None


def _positive_copy(module: nn.Module) -> nn.Module:
    probe = copy_module(module)
    for sub in probe.modules():  # the user's own hooks were copied too: drop them
        for hooks in (sub._forward_hooks, sub._forward_pre_hooks, sub._backward_hooks):
            hooks.clear()
    for name, sub in list(probe.named_modules()):
        new = _swap(sub)
        if new is not None and name:
            parent_name, _, attr = name.rpartition(".")
            setattr(get_submodule(probe, parent_name), attr, new)
    with torch.no_grad():
        for name, p in probe.named_parameters():
            p.requires_grad_(False)
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.fill_(0.0 if name.endswith("bias") else 1.0 / max(1, fan_in))
        for name, b in probe.named_buffers():
            if name.endswith("running_mean"):
                b.zero_()
            elif name.endswith("running_var"):
                b.fill_(1.0)
    return probe.eval()


def receptive_boxes(
    module: nn.Module, layer: str, sample: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """(k, 2 d) ``[start_0, stop_0, start_1, stop_1, ...]`` input boxes for ``k`` positions.

    ``sample`` is one input (1, C, *spatial) fixing the input size; ``positions`` (k, d) are
    positions in ``layer``'s output. A row whose field cannot be found covers the whole input.
    """
    k, d = positions.shape
    spatial = sample.shape[2:]
    whole = torch.tensor([v for s in spatial for v in (0, s)], dtype=torch.long).repeat(k, 1)
    try:
        probe = _positive_copy(module)
    except Exception as exc:  # deepcopy can fail on exotic modules; fall back to whole inputs
        warnings.warn(f"receptive fields unavailable ({exc}); patches are whole inputs", stacklevel=3)
        return whole
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        store.append(first_tensor(out))
        raise StopForward  # nothing after the layer is needed

    x = torch.ones((k, *sample.shape[1:]), dtype=sample.dtype, device=sample.device, requires_grad=True)
    with torch.enable_grad(), forward_hooks([(get_submodule(probe, layer), hook)]):
        try:
            probe(x)
        except StopForward:
            pass
        a = store[0]
        idx = (torch.arange(k, device=a.device), slice(None), *positions.to(a.device).t())
        (g,) = torch.autograd.grad(a[idx].sum(), x)
    support = g.abs().sum(1) > 0  # (k, *spatial)
    out = whole.clone()
    for i in range(len(spatial)):
        others = [j + 1 for j in range(len(spatial)) if j != i]
        line = support.any(dim=others) if others else support  # (k, size_i)
        for r in range(k):
            nz = line[r].nonzero()
            if len(nz):
                out[r, 2 * i], out[r, 2 * i + 1] = int(nz[0]), int(nz[-1]) + 1
    return out
