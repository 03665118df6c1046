"""Attention maps of transformers and what they explain.

Methods (registered; see :func:`unveil.methods`): ``attention_raw``, ``attention_rollout`` and
``attention_flow`` (Abnar & Zuidema, 2020), ``grad_attention_rollout`` (Chefer et al., 2021).
:func:`attention` runs one of them on token ids, a tokenizer's output, or images (vision
transformers); :func:`capture_attentions` returns the raw (N, L, H, T, T) maps.

Works with Hugging Face transformers (switched to eager attention for the call and switched
back) and with modules built from ``nn.MultiheadAttention``. Importing this package never
imports transformers.
"""

from __future__ import annotations

from ._capture import AttentionMaps, capture_attentions, find_sites
from .explain import attention
from .flow import attention_flow, max_flow
from .methods import AttentionFlow, AttentionRaw, AttentionRollout, GradAttentionRollout
from .rollout import fuse_heads, grad_weighted_rollout, residual_attention, rollout
from .vit import tokens_to_image

__all__ = [
    "AttentionFlow",
    "AttentionMaps",
    "AttentionRaw",
    "AttentionRollout",
    "GradAttentionRollout",
    "attention",
    "attention_flow",
    "capture_attentions",
    "find_sites",
    "fuse_heads",
    "grad_weighted_rollout",
    "max_flow",
    "residual_attention",
    "rollout",
    "tokens_to_image",
]
