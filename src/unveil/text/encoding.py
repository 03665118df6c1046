"""Tokenizer output (a ``BatchEncoding`` or a mapping with ``input_ids``) as the methods take it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OptionError

__all__ = ["masked", "read_encoding"]


def read_encoding(model: Any, encoding: Mapping[str, Any]) -> tuple[Any, Any, Any, list[list[str]] | None]:
    """Split tokenizer output into ``(model, input_ids, attention_mask, tokens)``.

    ``model`` comes back wrapped so that it masks the padding itself when the mask has any
    (see :func:`masked`); ``tokens`` are the token strings per row when the encoding knows
    them (a fast tokenizer's ``BatchEncoding.tokens(i)``), else ``None``.
    """
    if "input_ids" not in encoding:
        raise InputError(f"a mapping of inputs needs 'input_ids', got keys {sorted(encoding)}")
    ids = encoding["input_ids"]
    mask = encoding.get("attention_mask")
    if mask is not None:
        model = masked(model, ids, mask)
    return model, ids, mask, _tokens(encoding, len(ids))


def _tokens(encoding: Any, n: int) -> list[list[str]] | None:
    tokens = getattr(encoding, "tokens", None)
    if not callable(tokens):
        return None
    try:
        return [[str(t) for t in tokens(i)] for i in range(n)]
    except Exception:  # a slow tokenizer's encoding has no token strings
        return None


def masked(model: Any, ids: Any, mask: Any) -> Any:
    """Wrap a Hugging Face model so that its padding (``mask == 0``) is masked at every call.

    The wrapper rebuilds the mask from the ids (``ids != pad_token_id``), so it stays right
    however the rows are chunked or repeated; a mask it cannot rebuild is refused.
    """
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if bool(m.all()):
        return model
    from .models import MaskedModel, TextModel

    if isinstance(model, TextModel):
        wrapped = model
    elif hasattr(model, "config"):
        wrapped = MaskedModel(model)
    else:
        raise OptionError(
            "tokens carry an attention_mask with padding, but the model is not a Hugging Face "
            "model; wrap it so that it masks padding itself (e.g. unveil.text.MaskedModel)"
        )
    wrapped.check_mask(ids, m)
    return wrapped
