"""Gradient-free channel weights for CAMs: Score-CAM and Ablation-CAM, batched over channels.

Both evaluate the model once per (row, channel) pair. The pairs are laid out as rows
``r = sample * C + channel`` and evaluated in chunks by :func:`~unveil.core.batching.map_chunked`;
each chunk builds its own masked inputs (or ablated activations), so the ``N * C`` perturbed
batch never exists at once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.batching import BatchSize, map_chunked
from ..core.hooks import forward_hooks
from ..core.model import Model
from ._cam_layers import Grid, upsample

__all__ = ["ablation_values", "ablation_weights", "score_cam_weights"]


def _pairs(a: int, b: int, c: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(a, b, device=device)
    return rows // c, rows % c


def _pick(t: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[s]


def score_cam_weights(
    model: Model,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    align_corners: bool,
    batch_size: BatchSize,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Score-CAM channel weights (Wang et al., 2020), shape ``(N, C)``.

    Each channel map is upsampled to the input size, min-max scaled to [0, 1] (``+1e-8`` in the
    denominator), and multiplied into the input; the target score of each masked input is
    taken, and the scores of a row's channels go through a softmax (pytorch-grad-cam's
    formulation).
    """
    n, c = maps.shape[:2]
    size = tuple(x.shape[2:])

    def run(a: int, b: int) -> torch.Tensor:
        s, k = _pairs(a, b, c, x.device)
        m = upsample(maps[s, k][:, None], size, align_corners=align_corners)
        flat = m.reshape(m.shape[0], -1)
        lo = flat.min(dim=1).values.reshape(-1, *([1] * (m.ndim - 1)))
        hi = flat.max(dim=1).values.reshape(-1, *([1] * (m.ndim - 1)))
        m = (m - lo) / (hi - lo + 1e-8)
        return model.scores((x[s] * m).contiguous(memory_format=memory_format), _pick(targets, s))

    scores = map_chunked(
        run, n * c, batch_size=batch_size, model=model,
        key=("score_cam", tuple(x.shape[1:]), tuple(maps.shape[1:])),
    )
    return torch.softmax(scores.reshape(n, c), dim=1)


def ablation_values(layer_out: torch.Tensor, value: float | str) -> torch.Tensor:
    """The value an ablated channel is set to, per row ``(N,)``.

    ``"auto"`` is 0 when a row's smallest activation is 0 (post-ReLU maps, the paper's choice)
    and ``min - 1e7`` otherwise (pytorch-grad-cam's choice for signed activations).
    """
    if value != "auto":
        return torch.full((layer_out.shape[0],), float(value), dtype=layer_out.dtype,
                          device=layer_out.device)
    lo = layer_out.reshape(layer_out.shape[0], -1).min(dim=1).values
    return torch.where(lo == 0, torch.zeros_like(lo), lo - 1e7)


def ablation_weights(
    model: Model,
    layer: nn.Module,
    x: torch.Tensor,
    layer_out: torch.Tensor,
    grid: Grid,
    targets: torch.Tensor | None,
    base_scores: torch.Tensor,
    *,
    value: float | str,
    batch_size: BatchSize,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Ablation-CAM channel weights (Desai & Ramaswamy, 2020), shape ``(N, C)``.

    For each row and channel, the layer's output is replaced by the row's activations with that
    channel set to the ablation value (for token outputs: that feature in every token), and
    the relative drop of the target score, ``(y - y_k) / y``, is the channel's weight.
    ``layer_out`` holds the layer's outputs with the batch axis first.
    """
    n = layer_out.shape[0]
    c = layer_out.shape[1] if grid.kind == "map" else layer_out.shape[2]
    fill = ablation_values(layer_out, value)

    def run(a: int, b: int) -> torch.Tensor:
        s, k = _pairs(a, b, c, x.device)
        rep = layer_out[s].clone()
        ar = torch.arange(len(s), device=x.device)
        if grid.kind == "map":
            rep[ar, k] = fill[s].reshape(-1, *([1] * (rep.ndim - 2))).expand_as(rep[ar, k])
        else:
            rep[ar, :, k] = fill[s][:, None].expand(-1, rep.shape[1])
        swapped = rep if grid.batch_first else rep.transpose(0, 1)

        def hook(_m: nn.Module, _i: Any, _o: Any) -> torch.Tensor:
            return swapped

        with forward_hooks([(layer, hook)]):
            return model.scores(x[s].contiguous(memory_format=memory_format), _pick(targets, s))

    scores = map_chunked(
        run, n * c, batch_size=batch_size, model=model,
        key=("ablation_cam", tuple(x.shape[1:]), tuple(layer_out.shape[1:])),
    ).reshape(n, c)
    base = base_scores.reshape(n, 1).to(scores)
    return (base - scores) / base
