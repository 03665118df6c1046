"""Text models and token-level explanations (the ``text`` extra).

* :class:`TextClassifier` / :class:`ZeroShotClassifier` / :class:`MaskedModel`: Hugging Face
  models as modules of token ids that mask padding themselves, so every method (gradients on
  the embeddings, token masking, attention) can call them with ids alone.
* :func:`minilm_zero_shot`: the offline MiniLM sentence encoder as a zero-shot classifier.
* :mod:`~unveil.text.synthetic`: a task with a known decisive token and a tiny transformer
  trained on it in seconds.
* :func:`merge_subwords`: subword scores to word scores. :func:`tokens_html` and
  :func:`attention_grid_html`: self-contained HTML views.

Token attributions by gradients come from the registered methods on token ids, e.g.
``unveil.explain(model, ids, method="integrated_gradients")`` (attributed at the first
``nn.Embedding``, one value per token). Importing this package never imports transformers.
"""

from __future__ import annotations

from .examples import minilm_zero_shot
from .html import attention_grid_html, tokens_html
from .merge import SPECIAL_TOKENS, merge_subwords
from .models import MaskedModel, TextClassifier, TextModel, ZeroShotClassifier, mean_pool
from .synthetic import (
    SyntheticTask,
    TinyTextTransformer,
    make_synthetic_task,
    synthetic_example,
    train_synthetic_transformer,
)

__all__ = [
    "MaskedModel",
    "SPECIAL_TOKENS",
    "SyntheticTask",
    "TextClassifier",
    "TextModel",
    "TinyTextTransformer",
    "ZeroShotClassifier",
    "attention_grid_html",
    "make_synthetic_task",
    "mean_pool",
    "merge_subwords",
    "minilm_zero_shot",
    "synthetic_example",
    "tokens_html",
    "train_synthetic_transformer",
]
