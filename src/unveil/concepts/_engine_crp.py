"""The CRP pass: LRP over the relevance-ready copy, masked at one layer.

Relevance travels as the "gradient" of the prepared copy (:mod:`unveil.attribution.lrp`). A
forward hook on the conditioning layer of the copy keeps its output; the relevance is carried
back to that output, multiplied there by each row's channel mask (Achtibat et al. 2023, eq. 5:
conditioning on concept θ zeroes the relevance of every other channel of that layer), and
carried on to the input from the layer's output only, so the input relevance is the part that
flows through the chosen channels. Rows are replicated once per condition and the masks differ
per row, so many conditions share one batched pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attribution.lrp import Composite, Prepared, prepare, preset
from ..core.batching import BatchSize, rows_located, run_chunked
from ..core.hooks import forward_hooks, get_submodule
from ..core.model import Model
from ..core.prepared import by_identity, cached
from ..errors import InputError, LayerNotFoundError, ModelError, OptionError

__all__ = ["Pass", "Relevance", "channel_axis", "channel_count", "masks_for", "relevance"]


def channel_axis(module: nn.Module, ndim: int, given: int | None = None) -> int:
    """The channel axis of ``module``'s output of ``ndim`` axes: ``given``, else 1 for
    convolutions and 2-D or 4-D+ outputs, the last for other 3-D outputs ``(N, T, D)`` (a
    transformer's tokens by features)."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or not -ndim < given < ndim or given % ndim == 0:
            raise OptionError(f"channel_axis must be an axis of one row's activation (1..{ndim - 1}), got {given!r}")
        return given % ndim
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or ndim != 3:
        return 1
    return ndim - 1


@dataclass
class Pass:
    """What one masked relevance pass returns, row by row."""

    heat: torch.Tensor  # (B, *input) relevance at the input (zeros for a pass without masks)
    layer_rel: torch.Tensor  # (B, C) relevance of each channel at the layer, before masking
    layer_map: torch.Tensor | None  # (B, C, *positions) relevance at the layer (if kept)
    act: torch.Tensor  # (B, C) activation of each channel (max over positions)
    outputs: torch.Tensor  # (B, K) outputs of the model
    scores: torch.Tensor  # (B,) the explained scores (the relevance put in at the output)


class Relevance:
    """A model prepared for CRP with one composite, conditioned at one layer."""

    def __init__(self, model: Model, layer: str, composite: str | Composite, x: torch.Tensor,
                 axis: int | None = None) -> None:
        module = model.module
        if module is None:
            raise ModelError(
                f"concept relevance propagates LRP rules layer by layer, so it needs a "
                f"torch.nn.Module; got {type(model.obj).__name__}"
            )
        if not x.is_floating_point():
            raise InputError(
                f"concept relevance propagates relevance to the inputs, which are integers "
                f"({x.dtype}); explain a model that takes float inputs"
            )
        if not isinstance(layer, str):
            raise LayerNotFoundError(f"layer must be a dotted layer name, got {type(layer).__name__}")
        get_submodule(module, layer)  # raises with the closest names
        if isinstance(composite, str):
            comp = preset(composite)
            ckey: Any = ("preset", composite)
        elif isinstance(composite, Composite):
            comp, ckey = composite, by_identity(composite)
        else:
            raise OptionError(
                f"composite must be a preset name or an unveil.attribution.lrp.Composite, got "
                f"{type(composite).__name__}"
            )
        key = ("crp", ckey, tuple(x.shape[1:]), x.dtype, x.device)
        self.model, self.layer = model, layer
        self.composite = composite if isinstance(composite, str) else comp.name
        self.prep: Prepared = cached(module, key, lambda: prepare(module, x[:1], comp))
        self.copy_layer = self.prep.module.get_submodule(layer)
        self.given_axis = axis
        output = "logits" if model.output == "probs" else model.output
        self.dup = Model(self.prep.module, output=output)

    def one(self, x: torch.Tensor, targets: torch.Tensor | None, masks: torch.Tensor | None,
            *, keep_map: bool = False) -> Pass:
        """One pass over rows ``x``: ``masks`` (B, C) of 0/1 per channel, or ``None``.

        Two stages, as zennit-crp's ``exclude_parallel``: the relevance at the layer's output
        first, then only that (masked) relevance is carried on to the input, so relevance that
        bypasses the layer (a residual shortcut around it) is not part of a concept's map.
        """
        seen: dict[str, torch.Tensor] = {}

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                raise ModelError(
                    f"layer {self.layer!r} returns {type(out).__name__}, not a tensor; condition "
                    "on a layer whose output is one tensor (a convolution, linear layer or activation)"
                )
            if out.ndim < 2:
                raise ModelError(f"layer {self.layer!r} returns shape {tuple(out.shape)}: no channel axis")
            seen.setdefault("out", out)  # the first call, if the layer runs twice

        prep = self.prep
        xa = x.detach().contiguous(memory_format=prep.memory_format).requires_grad_(True)
        with torch.enable_grad(), prep.relevance_mode(), forward_hooks([(self.copy_layer, hook)]):
            out = self.dup.forward(xa)
            if "out" not in seen:
                raise ModelError(f"layer {self.layer!r} did not run in the model's forward pass")
            lo = seen["out"]
            ax = channel_axis(self.copy_layer, lo.ndim, self.given_axis)
            if masks is not None and masks.shape[1] != lo.shape[ax]:
                raise OptionError(f"masks have {masks.shape[1]} channels, layer has {lo.shape[ax]}")
            s = self.dup.select(out, targets)
            r: torch.Tensor | None = None
            if lo.requires_grad:
                (r,) = torch.autograd.grad(s, lo, grad_outputs=s.detach(), retain_graph=masks is not None,
                                           allow_unused=True)
            if r is None:  # nothing flowed through the layer
                r = torch.zeros_like(lo)
            if masks is None:
                g = r
            else:
                shape = [masks.shape[0]] + [1] * (r.ndim - 1)
                shape[ax] = masks.shape[1]
                g = r * masks.to(r.dtype).view(shape)
            rel: torch.Tensor | None = None
            if lo.requires_grad and masks is not None:  # without masks only the layer's relevance is wanted
                (rel,) = torch.autograd.grad(lo, xa, grad_outputs=g, allow_unused=True)
        r = r.detach().movedim(ax, 1)
        a = lo.detach().movedim(ax, 1)
        heat = torch.zeros_like(xa) if rel is None else rel.detach().contiguous()
        layer_rel = r.flatten(2).sum(2) if r.ndim > 2 else r
        act = a.flatten(2).amax(2) if a.ndim > 2 else a
        return Pass(heat=heat, layer_rel=layer_rel, layer_map=r if keep_map else None,
                    act=act, outputs=out.detach(), scores=s.detach())

    def run(self, x: torch.Tensor, targets: torch.Tensor | None, masks: torch.Tensor | None,
            *, batch_size: BatchSize, keep_map: bool = False) -> Pass:
        """:meth:`one` over all rows in chunks."""
        parts: list[Pass] = []

        def run(a: int, b: int) -> Pass:
            return self.one(x[a:b], None if targets is None else targets[a:b],
                            None if masks is None else masks[a:b], keep_map=keep_map)

        def consume(a: int, b: int, res: Pass) -> None:
            parts.append(res)
            self.model.n_evals += b - a

        run_chunked(rows_located(run, x.shape[0]), x.shape[0], consume=consume, batch_size=batch_size,
                    model=self.dup, grad=True, key=("crp", self.layer, tuple(x.shape[1:])))

        def cat(get: Callable[[Pass], torch.Tensor | None]) -> torch.Tensor | None:
            items = [get(p) for p in parts]
            return None if items[0] is None else torch.cat([i for i in items if i is not None])

        heat, lr, act, out, sc = (cat(lambda p, f=f: getattr(p, f)) for f in  # type: ignore[misc]
                                  ("heat", "layer_rel", "act", "outputs", "scores"))
        assert heat is not None and lr is not None and act is not None and out is not None and sc is not None
        return Pass(heat, lr, cat(lambda p: p.layer_map), act, out, sc)


def channel_count(rel: Relevance, x: torch.Tensor) -> int:
    """How many channels the conditioning layer has, from a forward pass on one row."""
    seen: list[int] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.ndim >= 2:
            seen.append(int(out.shape[channel_axis(rel.copy_layer, out.ndim, rel.given_axis)]))

    with torch.no_grad(), forward_hooks([(rel.copy_layer, hook)]):
        rel.dup.forward(x[:1])
    if not seen:
        raise ModelError(
            f"layer {rel.layer!r} gave no tensor with a channel axis in the forward pass; "
            "condition on a convolution, linear layer or activation"
        )
    return seen[0]


def masks_for(conditions: list[list[int]], n_channels: int, dtype: torch.dtype,
              device: torch.device) -> torch.Tensor:
    """(m, C) 0/1 masks, one per condition (a list of channel ids)."""
    m = torch.zeros(len(conditions), n_channels, dtype=dtype, device=device)
    for i, chans in enumerate(conditions):
        for c in chans:
            if not 0 <= c < n_channels:
                raise OptionError(
                    f"channel {c} is out of range: the layer has {n_channels} channels, so "
                    f"concepts must be in [0, {n_channels - 1}]"
                )
            m[i, c] = 1
    return m


def relevance(model: Model, layer: str, composite: str | Composite, x: torch.Tensor,
              axis: int | None = None) -> Relevance:
    """A :class:`Relevance` for ``model`` (the prepared copy is cached per model and options)."""
    return Relevance(model, layer, composite, x, axis)
