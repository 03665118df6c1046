"""Adapters that turn Hugging Face text models into ``ids -> logits`` modules.

Explanation methods call a model with one batch of token ids (N, T). Both adapters here rebuild
the attention mask from the ids (``ids != pad_token_id``) at every call, so padding stays masked
however the rows are chunked or repeated (path methods repeat each row ``n_steps`` times).
Neither imports transformers: they wrap model objects the caller already has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.hooks import eval_mode
from ..errors import InputError, ModelError, OptionError

__all__ = ["MaskedModel", "TextClassifier", "TextModel", "ZeroShotClassifier", "mean_pool"]


def _pad_id(model: Any, tokenizer: Any, pad_token_id: int | None) -> int | None:
    if pad_token_id is not None:
        return int(pad_token_id)
    for obj in (tokenizer, getattr(model, "config", None)):
        pad = getattr(obj, "pad_token_id", None)
        if isinstance(pad, int):
            return pad
    return None


class TextModel(nn.Module):
    """Base of the adapters: a module of token ids whose attention mask is ``ids != pad``."""

    pad_token_id: int | None

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, T) long mask: 1 for tokens, 0 for padding."""
        if self.pad_token_id is None:
            return torch.ones_like(ids, dtype=torch.long)
        return (ids != self.pad_token_id).long()

    def check_mask(self, ids: Any, mask: Any) -> None:
        """Raise :class:`OptionError` if ``mask`` is not what this wrapper rebuilds from ``ids``."""
        ids_t = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if not torch.equal(self.attention_mask(ids_t).cpu(), m.long().cpu()):
            raise OptionError(
                f"the attention_mask does not mark exactly the padding tokens (id "
                f"{self.pad_token_id}); pad with the tokenizer's pad token so the mask can be "
                "rebuilt from the ids, or pass pad_token_id="
            )


class MaskedModel(TextModel):
    """Any Hugging Face model called with the padding mask rebuilt from its ids.

    Returns the model's output as it is (e.g. ``last_hidden_state`` for an encoder): enough for
    the attention methods, which read the model's insides. For scores use
    :class:`TextClassifier` or :class:`ZeroShotClassifier`.
    """

    def __init__(self, model: nn.Module, *, pad_token_id: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.pad_token_id = _pad_id(model, None, pad_token_id)
        self.training = model.training

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        mask = self.attention_mask(input_ids) if attention_mask is None else attention_mask
        return self.model(input_ids=input_ids, attention_mask=mask)


class TextClassifier(TextModel):
    """Logits from token ids for a Hugging Face sequence classifier (or any such module).

    Parameters
    ----------
    model : nn.Module
        Called as ``model(input_ids=..., attention_mask=...)``; its output is a tensor, a tuple
        whose first item is the logits, or an object with ``.logits``.
    pad_token_id : int, optional
        Padding id (default: ``model.config.pad_token_id``; without one nothing is masked).
    """

    def __init__(self, model: nn.Module, *, pad_token_id: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.pad_token_id = _pad_id(model, None, pad_token_id)
        self.training = model.training  # the wrapper adds no mode of its own

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.attention_mask(input_ids) if attention_mask is None else attention_mask
        out = self.model(input_ids=input_ids, attention_mask=mask)
        logits = getattr(out, "logits", None)
        if logits is None and isinstance(out, (tuple, list)):
            logits = out[0]
        if logits is None and isinstance(out, torch.Tensor):
            logits = out
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ModelError(
                f"{type(self.model).__name__} returned no (N, K) logits; wrap a model with a "
                "classification head, or use ZeroShotClassifier for a sentence encoder"
            )
        return logits


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of token states (N, T, D) over non-padding tokens (N, T) -> (N, D)."""
    w = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1e-9)


class ZeroShotClassifier(TextModel):
    """A zero-shot classifier from a sentence encoder: cosine similarity to label prompts.

    The sentence embedding is the mean of the encoder's last hidden states over non-padding
    tokens (the pooling of Sentence-BERT, Reimers & Gurevych, 2019), L2-normalised; class ``k``
    scores ``scale * cos(embedding, prompt_k)`` where ``prompt_k`` is the embedding of
    ``template.format(labels[k])``.

    Parameters
    ----------
    encoder : nn.Module
        A Hugging Face encoder (``BertModel`` ...) returning ``last_hidden_state``.
    tokenizer
        Its tokenizer (kept as ``self.tokenizer`` for :meth:`encode` and :meth:`tokens`).
    labels : sequence of str
        Class names, in class-index order.
    template : str
        Prompt with one ``{}`` for the label.
    scale : float
        Multiplies the cosine similarities (1: scores in [-1, 1]).
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any, labels: Sequence[str], *,
                 template: str = "This review is {}.", scale: float = 1.0,
                 pad_token_id: int | None = None) -> None:
        super().__init__()
        if len(labels) < 2:
            raise OptionError(f"a classifier needs at least two labels, got {list(labels)!r}")
        if "{}" not in template:
            raise OptionError(f"template must contain '{{}}' for the label, got {template!r}")
        self.encoder = encoder
        self.training = encoder.training
        self.tokenizer = tokenizer
        self.labels = [str(s) for s in labels]
        self.template = template
        self.scale = float(scale)
        self.pad_token_id = _pad_id(encoder, tokenizer, pad_token_id)
        ids, mask = self.encode([template.format(s) for s in self.labels])
        with eval_mode(encoder, warn=False), torch.no_grad():
            self.register_buffer("label_embeddings", self.embed(ids, mask))

    def encode(self, texts: Sequence[str], *, max_length: int | None = None,
               pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (N, T) for ``texts`` (padded to ``pad_to`` if given)."""
        if isinstance(texts, str):
            raise InputError("encode takes a list of texts; wrap a single text in a list")
        enc = self.tokenizer(list(texts), padding="max_length" if pad_to else True,
                             truncation=max_length is not None or pad_to is not None,
                             max_length=pad_to or max_length, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def tokens(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """The token strings of one row of ids."""
        row = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return list(self.tokenizer.convert_ids_to_tokens(row))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised mean-pooled sentence embeddings (N, D)."""
        mask = self.attention_mask(input_ids) if attention_mask is None else attention_mask
        out = self.encoder(input_ids=input_ids, attention_mask=mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return nn.functional.normalize(mean_pool(hidden, mask), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(input_ids, attention_mask)
        return self.scale * emb @ self.label_embeddings.to(emb.dtype).T  # type: ignore[operator]
