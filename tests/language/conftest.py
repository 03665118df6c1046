"""Tiny causal LMs built from configs (no download) and the zoo's induction transformer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unveil.zoo.induction import InductionTransformer, induction_transformer


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


@pytest.fixture(params=sorted(TINY))
def tiny_lm(request: pytest.FixtureRequest) -> nn.Module:
    return TINY[request.param]()


@pytest.fixture(scope="session")
def induction() -> InductionTransformer:
    return induction_transformer()
