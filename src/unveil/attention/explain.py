"""`attention(model, tokens, method)`: explain a model with an attention method in one call (token ids, tokenizer output, or images)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.explain import explain as _explain
from ..core.explanation import Explanation
from ..core.model import TargetSpec
from ..core.registry import get_method
from ..errors import OptionError

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
        from ..text.encoding import read_encoding

        model, tokens, mask, strings = read_encoding(model, tokens)
        if mask is not None:
            options.setdefault("attention_mask", mask)
        exp = _explain(model, tokens, method=info.name, target=target, **options)
        if strings is not None:
            exp.meta["tokens"] = strings
        return exp
    return _explain(model, tokens, method=info.name, target=target, **options)
