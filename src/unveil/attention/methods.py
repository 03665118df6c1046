"""Attention-based explanations as registered methods.

Each method captures the attention probabilities of every self-attention layer (see
:mod:`._capture`), turns them into token-to-token relevance, and reports the row of one output
token (``query=0``, the ``[CLS]`` token, by default) as one value per input token, (N, T). For
image inputs (a vision transformer) the patch tokens are mapped back onto the image: values are
(N, 1, H, W) and ``extras["tokens"]`` keeps the per-token row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Union

import numpy as np
import torch

from ..attribution import Attributor, Call, Partial, refuse_options
from ..core.batching import BatchSize, run_chunked
from ..core.explanation import Explanation
from ..core.model import Model, TargetSpec
from ..core.options import ArrayLike, Option
from ..core.registry import register
from ..errors import InputError, NotDifferentiableError, OptionError
from ._capture import Site, attention_context, find_sites, forward_capture
from .flow import attention_flow
from .rollout import HeadFusion, fuse_heads, grad_weighted_rollout, residual_attention, rollout
from .vit import tokens_to_image

__all__ = [
    "AttentionFlow",
    "AttentionRaw",
    "AttentionRollout",
    "GradAttentionRollout",
]

Query = Union[int, Literal["mean"]]
_MODALITIES = ("text", "image")

# the options of the attention methods, declared once and composed per method below
_QUERY = Option("query", Query, 0, "the output token whose row is reported (0: [CLS]), or "
                "'mean' over the non-padding tokens")
_HEAD_FUSION = Option("head_fusion", HeadFusion, "mean", "how heads are fused: 'mean' (paper), "
                      "'max' or 'min'")
_MODULES = Option("modules", Union[Sequence[str], None], None, "dotted names of the attention "
                  "modules when they are not found automatically")
_PREFIX = Option("prefix_tokens", int, 1, "for image inputs: tokens before the patch tokens "
                 "(1 for [CLS])", low=0)
_KEEP = Option("keep_attentions", bool, True, "store the captured maps (N, L, H, T, T) in "
               "extras['attentions']")
_RESIDUAL = Option("residual", float, 0.5, "weight of the identity mixed into each layer's "
                   "attention for the residual connection, in [0, 1)", low=0, high=1)
_MASK = Option("attention_mask", Union[ArrayLike, None], None, "(N, T) mask of the real tokens: "
               "padding gets 0 (and is left out of query='mean')", where="call")
_COMMON = (_QUERY, _HEAD_FUSION, _MODULES, _PREFIX, _KEEP, _MASK)


class _AttentionMethod(Attributor):
    """Shared steps: capture in chunks, pick the query row, map patches back to images."""

    needs_grad: ClassVar[bool] = False

    def __init__(
        self,
        model: Any,
        *,
        query: Query = 0,
        head_fusion: HeadFusion = "mean",
        modules: Sequence[str] | None = None,
        prefix_tokens: int = 1,
        keep_attentions: bool = True,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        self.query = query
        self.head_fusion = head_fusion
        self.modules = None if modules is None else list(modules)
        self.prefix_tokens = prefix_tokens
        self.keep_attentions = keep_attentions

    def _run(self, inputs: Any, *, target: TargetSpec = "predicted", **kwargs: Any) -> Explanation:
        # a registered method's call options are checked already; this guards subclasses
        refuse_options(self.name, {k: v for k, v in kwargs.items() if k != "attention_mask"},
                       ("target", "attention_mask"))
        return super()._run(inputs, target=target, **kwargs)

    # -- capture ------------------------------------------------------------------------------
    def _sites(self, model: Model) -> list[Site]:
        if model.module is None:
            raise NotDifferentiableError(
                f"{self.name!r} reads attention inside the model, so it needs a torch.nn.Module; "
                f"got {type(model.obj).__name__}"
            )
        return find_sites(model.module, self.modules)

    def _capture(self, call: Call) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
        """(N, L, H, T, T) probabilities, their gradients (gradient methods) and layer names."""
        model, x, t = call.model, call.x, call.targets
        sites = self._sites(model)
        n = x.shape[0]
        store: dict[str, Any] = {}

        def run(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
            if not self.needs_grad:
                with torch.no_grad():
                    _, maps, names = forward_capture(model, x[a:b], sites)
                return torch.stack(maps, 1), None, names
            with torch.enable_grad():
                out, maps, names = forward_capture(model, x[a:b], sites, grad=True)
                s = Model.select(out, None if t is None else t[a:b])
                if not s.requires_grad:
                    raise NotDifferentiableError(
                        f"{self.name!r} needs the scores to depend differentiably on the "
                        "attention probabilities; use 'attention_rollout' for this model"
                    )
                grads = torch.autograd.grad(s.sum(), maps)
            return torch.stack(maps, 1).detach(), torch.stack(grads, 1), names

        def consume(a: int, b: int, res: tuple[torch.Tensor, torch.Tensor | None, list[str]]) -> None:
            if "probs" not in store:
                store["probs"] = res[0].new_empty((n, *res[0].shape[1:]))
                store["grads"] = None if res[1] is None else res[1].new_empty(store["probs"].shape)
                store["names"] = res[2]
            store["probs"][a:b] = res[0]
            if res[1] is not None:
                store["grads"][a:b] = res[1]

        with attention_context(model.module):
            run_chunked(run, n, consume=consume, batch_size=self.batch_size, model=model,
                        grad=self.needs_grad, key=(self.name, tuple(x.shape[1:])))
        return store["probs"], store["grads"], store["names"]

    # -- query rows -----------------------------------------------------------------------------
    def _valid(self, call: Call, n_tokens: int, attention_mask: Any) -> torch.Tensor:
        """(N, T) bool: tokens that are not padding."""
        if attention_mask is None:
            return torch.ones(call.x.shape[0], n_tokens, dtype=torch.bool, device=call.x.device)
        m = torch.as_tensor(np.asarray(attention_mask) if not isinstance(attention_mask, torch.Tensor)
                            else attention_mask).to(call.x.device)
        if tuple(m.shape) != (call.x.shape[0], n_tokens):
            raise InputError(
                f"attention_mask must be (N, T) = {(call.x.shape[0], n_tokens)}, got "
                f"{tuple(m.shape)}"
            )
        return m.bool()

    def _query_row(self, rel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Row ``query`` of (N, T, T) relevance, or the mean over valid rows; padding -> 0."""
        t = rel.shape[-1]
        if self.query == "mean":
            w = valid.to(rel.dtype)
            row = (w.unsqueeze(-1) * rel).sum(1) / w.sum(1, keepdim=True).clamp_min(1)
        else:
            q = int(self.query)
            if not -t <= q < t:
                raise OptionError(f"query={q} is out of range for sequences of {t} tokens")
            row = rel[:, q]
        return row * valid.to(row.dtype)

    def _result(self, call: Call, tokens: torch.Tensor, extras: dict[str, Any],
                meta: dict[str, Any]) -> Partial:
        """Package (N, T) token values, mapped to pixels for image inputs."""
        x = call.x
        if x.is_floating_point() and x.ndim == 4:
            size = (int(x.shape[-2]), int(x.shape[-1]))
            patch_map, pixels = tokens_to_image(tokens, size, self.prefix_tokens)
            return Partial(values=pixels, extras=extras, meta=meta, modality="image").add(
                extras={"tokens": tokens, "patch_map": patch_map})
        return Partial(values=tokens, extras=extras, meta=meta, modality="text")


@register("attention_raw", family="attention", modalities=_MODALITIES,
          display_name="Raw Attention", signed=False,
          options=(Option("layer", int, -1, "which self-attention layer (-1: the last)"), *_COMMON))
class AttentionRaw(_AttentionMethod):
    """Raw attention of one layer: the query token's attention to every token.

    Parameters
    ----------
    layer : int
        Which self-attention layer (default -1, the last).
    query, head_fusion, modules, prefix_tokens, keep_attentions
        See :class:`AttentionRollout`.

    ``extras["attentions"]`` holds every layer's maps (N, L, H, T, T).
    """

    def __init__(self, model: Any, *, layer: int = -1, query: Query = 0,
                 head_fusion: HeadFusion = "mean", modules: Sequence[str] | None = None,
                 prefix_tokens: int = 1, keep_attentions: bool = True,
                 batch_size: BatchSize = "auto") -> None:
        super().__init__(model, query=query, head_fusion=head_fusion, modules=modules,
                         prefix_tokens=prefix_tokens, keep_attentions=keep_attentions,
                         batch_size=batch_size)
        self.layer = layer

    def _attribute(self, call: Call, *, attention_mask: Any = None) -> Partial:
        probs, _, names = self._capture(call)
        n_layers = probs.shape[1]
        if not -n_layers <= self.layer < n_layers:
            raise OptionError(f"layer={self.layer} is out of range: the model has {n_layers} "
                              "attention layers")
        att = fuse_heads(probs, self.head_fusion)[:, self.layer]  # heads fused: (N, T, T)
        valid = self._valid(call, att.shape[-1], attention_mask)
        extras = {"attentions": probs} if self.keep_attentions else {}
        return self._result(call, self._query_row(att, valid), extras,
                            {"layers": names, "layer": names[self.layer]})


@register("attention_rollout", family="attention", modalities=_MODALITIES,
          display_name="Attention Rollout", signed=False, preferred_for={"text": 1},
          options=(_RESIDUAL, *_COMMON))
class AttentionRollout(_AttentionMethod):
    """Attention rollout (Abnar & Zuidema, ACL 2020): attention multiplied through the layers.

    Parameters
    ----------
    residual : float
        Weight of the identity mixed into each layer's attention for the residual connection
        (0.5 as in the paper; 0 multiplies the raw maps).
    query : int or "mean"
        The output token whose row is reported (default 0, ``[CLS]``), or ``"mean"`` over the
        non-padding tokens (for mean-pooled models).
    head_fusion : str
        ``"mean"`` (paper), ``"max"`` or ``"min"`` over heads.
    modules : list of str, optional
        Dotted names of the attention modules, when they are not found automatically
        (``nn.MultiheadAttention`` and Hugging Face models are).
    prefix_tokens : int
        For image inputs: tokens before the patch tokens (1 for ``[CLS]``).
    keep_attentions : bool
        Store the captured maps (N, L, H, T, T) in ``extras["attentions"]`` (default True).

    Call with ``attention_mask=`` (N, T) to zero padding (and to define ``query="mean"``).
    ``extras["rollout"]`` holds the full (N, T, T) rollout. The method ignores the target.
    """

    def __init__(self, model: Any, *, residual: float = 0.5, query: Query = 0,
                 head_fusion: HeadFusion = "mean", modules: Sequence[str] | None = None,
                 prefix_tokens: int = 1, keep_attentions: bool = True,
                 batch_size: BatchSize = "auto") -> None:
        super().__init__(model, query=query, head_fusion=head_fusion, modules=modules,
                         prefix_tokens=prefix_tokens, keep_attentions=keep_attentions,
                         batch_size=batch_size)
        residual_attention(torch.zeros(1, 1), residual)  # validate early
        self.residual = residual

    def _attribute(self, call: Call, *, attention_mask: Any = None) -> Partial:
        probs, _, names = self._capture(call)
        rel = rollout(fuse_heads(probs, self.head_fusion), self.residual)
        valid = self._valid(call, rel.shape[-1], attention_mask)
        extras: dict[str, Any] = {"rollout": rel}
        if self.keep_attentions:
            extras["attentions"] = probs
        return self._result(call, self._query_row(rel, valid), extras, {"layers": names})


@register(
    "attention_flow", family="attention", modalities=_MODALITIES, display_name="Attention Flow",
    signed=False,
    options=(_RESIDUAL, dataclasses.replace(_QUERY, type=int, meaning="the output token whose "
                                            "inflow is reported (0: [CLS]); not 'mean'"),
             Option("normalize", bool, True, "divide each sample's flows by their sum"),
             *(o for o in _COMMON if o.name != "query")),
)
class AttentionFlow(_AttentionMethod):
    """Attention flow (Abnar & Zuidema, ACL 2020): max-flow through the attention graph.

    Each input token's value is the maximum flow from it to the query token at the top layer,
    with head-fused, residual-augmented attention as edge capacities (see
    :mod:`unveil.attention.flow`). Costs one max-flow per token per sample; ``query="mean"``
    is not available (flows do not add up over sinks).

    Parameters
    ----------
    residual, query, head_fusion, modules, prefix_tokens, keep_attentions
        See :class:`AttentionRollout`.
    normalize : bool
        Divide each sample's flows by their sum, as in the paper (default True).
    """

    def __init__(self, model: Any, *, residual: float = 0.5, query: int = 0,
                 normalize: bool = True, head_fusion: HeadFusion = "mean",
                 modules: Sequence[str] | None = None, prefix_tokens: int = 1,
                 keep_attentions: bool = True, batch_size: BatchSize = "auto") -> None:
        if not isinstance(query, int) or isinstance(query, bool):  # a subclass's own query
            raise OptionError("attention_flow needs one query token (an int), not 'mean'")
        super().__init__(model, query=query, head_fusion=head_fusion, modules=modules,
                         prefix_tokens=prefix_tokens, keep_attentions=keep_attentions,
                         batch_size=batch_size)
        residual_attention(torch.zeros(1, 1), residual)
        self.residual = residual
        self.normalize = normalize

    def _attribute(self, call: Call, *, attention_mask: Any = None) -> Partial:
        probs, _, names = self._capture(call)
        cap = residual_attention(fuse_heads(probs, self.head_fusion), self.residual)
        t = cap.shape[-1]
        q = int(self.query)
        if not -t <= q < t:
            raise OptionError(f"query={q} is out of range for sequences of {t} tokens")
        valid = self._valid(call, t, attention_mask)
        cap_np, valid_np = cap.double().cpu().numpy(), valid.cpu().numpy()
        rows = [attention_flow(cap_np[i], q % t, keys=valid_np[i], normalize=self.normalize)
                for i in range(cap_np.shape[0])]  # graph algorithm per sample, no model calls
        flows = torch.as_tensor(np.stack(rows), dtype=probs.dtype, device=probs.device)
        extras = {"attentions": probs} if self.keep_attentions else {}
        return self._result(call, flows, extras, {"layers": names})


@register("grad_attention_rollout", family="attention", modalities=_MODALITIES,
          needs_gradients=True, display_name="Gradient-weighted Attention Rollout", signed=False,
          options=tuple(o for o in _COMMON if o.name != "head_fusion"))
class GradAttentionRollout(_AttentionMethod):
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021).

    Each layer's attention is weighted by the gradient of the target score with respect to it,
    negative products are dropped, heads are averaged, and relevance is propagated as
    ``R <- R + Ā_l R`` from ``R = I``. Unlike plain rollout it depends on the target class.

    Parameters
    ----------
    query, modules, prefix_tokens, keep_attentions
        See :class:`AttentionRollout`.

    ``extras["relevance"]`` holds the full (N, T, T) relevance and ``extras["gradients"]`` the
    gradients (with ``keep_attentions``).
    """

    needs_grad = True

    def __init__(self, model: Any, *, query: Query = 0, modules: Sequence[str] | None = None,
                 prefix_tokens: int = 1, keep_attentions: bool = True,
                 batch_size: BatchSize = "auto") -> None:
        super().__init__(model, query=query, modules=modules, prefix_tokens=prefix_tokens,
                         keep_attentions=keep_attentions, batch_size=batch_size)

    def _attribute(self, call: Call, *, attention_mask: Any = None) -> Partial:
        call.model.require_gradients(self.name)
        probs, grads, names = self._capture(call)
        assert grads is not None
        rel = grad_weighted_rollout(probs, grads)
        valid = self._valid(call, rel.shape[-1], attention_mask)
        extras: dict[str, Any] = {"relevance": rel}
        if self.keep_attentions:
            extras.update(attentions=probs, gradients=grads)
        return self._result(call, self._query_row(rel, valid), extras, {"layers": names})
