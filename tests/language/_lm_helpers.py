"""Tiny causal LMs built from configs (no download), and a toy network with a known answer."""

from __future__ import annotations

import torch
from torch import nn


def tiny_llama(seed: int = 0) -> nn.Module:
    """A 3-layer Llama with grouped-query attention (4 query heads, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(cfg).eval()


def tiny_neox(seed: int = 0) -> nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64, bos_token_id=1,
                        eos_token_id=2)
    return GPTNeoXForCausalLM(cfg).eval()


TINY = {"llama": tiny_llama, "gpt2": tiny_gpt2, "neox": tiny_neox}


class Block(nn.Module):
    """A residual block ``x + tanh(W x)`` (or ``x + W x + causal mean of W x`` when linear)."""

    def __init__(self, d: int, linear: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if not self.linear:
            return x + torch.tanh(h)
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[None, :, None]
        return x + h + h.cumsum(1) / steps  # mixes positions causally, still linear


class Toy(nn.Module):
    """Embedding, residual blocks under ``layers``, no final norm, ``lm_head``."""

    def __init__(self, linear: bool = True, d: int = 8, vocab: int = 20, n_layers: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d, linear) for _ in range(n_layers))
        self.lm_head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(x)  # type: ignore[no-any-return]  # Linear's output
