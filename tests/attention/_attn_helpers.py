"""Small models and references shared by the attention tests."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F


def tiny_bert(cls_name: str = "BertModel", **overrides: Any) -> nn.Module:
    """A randomly initialised 2-layer, 2-head BERT (no download), in eval mode."""
    transformers = pytest.importorskip("transformers")
    cfg = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=32, num_labels=3,
               attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.1)
    cfg.update(overrides)
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(transformers.BertConfig(**cfg)).eval()


def manual_forward(m: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """TinyTextTransformer written out by hand: logits and each layer's (N, H, T, T) attention.

    The attention maps stay in the graph (the embeddings require grad), so
    ``torch.autograd.grad(score, maps)`` is the reference gradient for Chefer et al.
    """
    x = (m.embed(ids) + m.pos[:, : ids.shape[1]]).detach().requires_grad_()
    pad = ids == m.pad_id
    maps = []
    h = x
    for layer in m.encoder.layers:
        a = layer.self_attn
        z = layer.norm1(h) if layer.norm_first else h
        n, t, e = z.shape
        heads, d = a.num_heads, e // a.num_heads
        q, k, v = (u.view(n, t, heads, d).transpose(1, 2)
                   for u in F.linear(z, a.in_proj_weight, a.in_proj_bias).chunk(3, -1))
        s = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(pad[:, None, None, :], float("-inf"))
        att = s.softmax(-1)
        maps.append(att)
        sa = a.out_proj((att @ v).transpose(1, 2).reshape(n, t, e))
        if layer.norm_first:
            h = h + sa
            h = h + layer.linear2(F.relu(layer.linear1(layer.norm2(h))))
        else:
            h = layer.norm1(h + sa)
            h = layer.norm2(h + layer.linear2(F.relu(layer.linear1(h))))
    return m.head(m.norm(h[:, 0])), maps
