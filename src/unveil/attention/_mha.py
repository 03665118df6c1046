"""A transparent re-computation of ``torch.nn.MultiheadAttention``.

PyTorch's multi-head attention hands back its probabilities only as a *view* of the tensor it
multiplies with the values (and averaged over heads by default), so the target score does not
depend on the returned tensor in the autograd graph and its gradient cannot be taken. This
module recomputes the same attention from the module's own parameters and returns both the
output and the per-head probabilities that produced it; a forward hook swaps the module's output
for this one, so everything downstream depends on these probabilities.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError

__all__ = ["MHA_ARGS", "mha_forward"]

# the positional order of nn.MultiheadAttention.forward's arguments
MHA_ARGS = (
    "query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
    "average_attn_weights", "is_causal",
)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean masks (True = not allowed) become ``-inf``; float masks are added as they are."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def _projections(m: nn.MultiheadAttention) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
    """The query, key and value projection weights and biases of ``m``."""
    if m._qkv_same_embed_dim:
        weights = tuple(m.in_proj_weight.chunk(3))
    else:
        weights = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
    biases: tuple[Any, ...] = (None, None, None)
    if m.in_proj_bias is not None:
        biases = tuple(m.in_proj_bias.chunk(3))
    return weights, biases


def mha_forward(m: nn.MultiheadAttention, call: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute ``m``'s attention for one call's arguments.

    Parameters
    ----------
    m : nn.MultiheadAttention
        The module (eval mode: no dropout on the probabilities).
    call : dict
        Its arguments by name (see :data:`MHA_ARGS`); batched inputs only.

    Returns
    -------
    output : Tensor
        The attention output, laid out as the module returns it ((N, T, E) with
        ``batch_first``, else (T, N, E)).
    probs : Tensor
        (N, H, T, S) attention probabilities per head; every row sums to one.
    """
    if m.bias_k is not None or m.add_zero_attn:
        raise ModelError(
            "attention capture supports nn.MultiheadAttention without add_bias_kv and "
            "add_zero_attn; pass modules= naming attention modules that return their "
            "probabilities as the second item of their output instead"
        )
    q_in, k_in, v_in = call["query"], call["key"], call["value"]
    if q_in.dim() != 3:
        raise ModelError(
            f"attention capture needs batched inputs to nn.MultiheadAttention (3-D), got a "
            f"query of shape {tuple(q_in.shape)}; add a batch axis"
        )
    if not m.batch_first:
        q_in, k_in, v_in = (t.transpose(0, 1) for t in (q_in, k_in, v_in))
    n, t_len, _ = q_in.shape
    s_len = k_in.shape[1]
    h, d = m.num_heads, m.head_dim
    (wq, wk, wv), (bq, bk, bv) = _projections(m)
    q = F.linear(q_in, wq, bq).view(n, t_len, h, d).transpose(1, 2)
    k = F.linear(k_in, wk, bk).view(n, s_len, h, d).transpose(1, 2)
    v = F.linear(v_in, wv, bv).view(n, s_len, h, d).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)
    attn_mask = call.get("attn_mask")
    if attn_mask is None and call.get("is_causal"):
        attn_mask = torch.ones(t_len, s_len, dtype=torch.bool, device=q.device).triu(1)
    am = _additive(attn_mask, scores.dtype)
    if am is not None:
        scores = scores + (am.view(n, h, t_len, s_len) if am.dim() == 3 else am)
    kpm = _additive(call.get("key_padding_mask"), scores.dtype)
    if kpm is not None:
        scores = scores + kpm.view(n, 1, 1, s_len)
    probs = torch.softmax(scores, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(n, t_len, h * d)
    out = F.linear(out, m.out_proj.weight, m.out_proj.bias)
    if not m.batch_first:
        out = out.transpose(0, 1)
    return out, probs
