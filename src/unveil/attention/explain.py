"""`attention(model, tokens, method)`: explain a model with an attention method in one call (token ids, tokenizer output, or images)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..core.explanation import Explanation
from ..core.model import TargetSpec
from ..core.registry import get_method
from ..errors import InputError, OptionError

__all__ = ["METHODS", "attention"]

METHODS = ("attention_raw", "attention_rollout", "attention_flow", "grad_attention_rollout")


def attention(
    model: Any,
    tokens: Any,
    method: str = "attention_rollout",
    *,
    target: TargetSpec = "predicted",
    **options: Any,
) -> Explanation:
    """Explain ``model`` on ``tokens`` with an attention method.

    Parameters
    ----------
    model : nn.Module
        A Hugging Face model (loaded with any attention implementation: the call switches it
        to eager attention and back), a :class:`unveil.text.TextClassifier`, or any module built
        from ``nn.MultiheadAttention``.
    tokens : Tensor, array or mapping
        Token ids (N, T), images (N, C, H, W) for a vision transformer, or a tokenizer's output
        (a mapping with ``input_ids`` and optionally ``attention_mask``).
    method : str
        ``"attention_raw"``, ``"attention_rollout"`` (default), ``"attention_flow"`` or
        ``"grad_attention_rollout"``.
    target : int, sequence or "predicted"
        The class explained (only ``grad_attention_rollout`` depends on it).
    **options
        The method's options (``query=``, ``head_fusion=``, ``residual=`` ...).

    Returns
    -------
    Explanation
        ``values`` (N, T) per token (or (N, 1, H, W) for images); ``extras`` holds the maps.
    """
    if method not in METHODS:
        raise OptionError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    info = get_method(method)
    if isinstance(tokens, Mapping):
        if "input_ids" not in tokens:
            raise InputError(f"a mapping of inputs needs 'input_ids', got keys {sorted(tokens)}")
        mask = tokens.get("attention_mask")
        if mask is not None:
            options.setdefault("attention_mask", mask)
            model = _masked(model, tokens["input_ids"], mask)
        tokens = tokens["input_ids"]
    from ..core.explain import explain

    return explain(model, tokens, method=info.name, target=target, **options)


def _masked(model: Any, ids: Any, mask: Any) -> Any:
    """Wrap a Hugging Face model so that its padding (``mask == 0``) is masked at every call.

    The wrapper rebuilds the mask from the ids (``ids != pad_token_id``), so it stays right
    however the rows are chunked or repeated; a mask it cannot rebuild is refused.
    """
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if bool(m.all()):
        return model
    from ..text.models import MaskedModel, TextModel

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
