"""Causal language models and their tokenizers: loading, checking that they belong together,
and showing tokens as the words they spell.

A model here is a Hugging Face-style causal LM: ``model(input_ids=ids)`` returns an object with
``.logits`` (N, T, V), and ``model.get_output_embeddings()`` is its language-model head. The
checks run once per call of the library, before any work, so a wrong pair fails with one clear
message instead of an index error deep inside a forward pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import InputError, MissingExtraError, ModelError

__all__ = ["LanguageModelInfo", "check_language_model", "load_language_model", "token_texts"]


@dataclass(frozen=True)
class LanguageModelInfo:
    """What the library needs to know of a (model, tokenizer) pair.

    Attributes
    ----------
    vocab_size : int
        Rows of the model's output layer (ids the model can predict).
    context : int or None
        Most positions the model takes (``config.max_position_embeddings``), if it says.
    eos_ids : tuple of int
        Ids that end a generation (the tokenizer's and the model's end-of-sequence ids).
    keeps_last_logits : bool
        Whether the model's forward takes ``logits_to_keep`` (then only the last position's
        logits are computed: the head is the largest matrix of a small LM).
    cache_arg : str or None
        The forward's key/value-cache keyword (``"cache"`` in recent transformers,
        ``"past_key_values"`` before), None if it takes neither.
    """

    vocab_size: int
    context: int | None
    eos_ids: tuple[int, ...]
    keeps_last_logits: bool
    cache_arg: str | None = None


def _ids(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if isinstance(v, int)]
    return []


def check_language_model(model: Any, tokenizer: Any) -> LanguageModelInfo:
    """Check that ``model`` is a causal LM with a head and that ``tokenizer`` belongs to it.

    Raises
    ------
    ModelError
        The model is not an ``nn.Module`` or has no language-model head (e.g. a bare
        ``LlamaModel`` rather than ``LlamaForCausalLM``).
    InputError
        The tokenizer has ids the model's output layer does not have (a vocabulary mismatch),
        or it is not a tokenizer.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a causal language model (a torch nn.Module such as "
                         f"LlamaForCausalLM), got {type(model).__name__}")
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module):
        raise ModelError(
            f"{type(model).__name__} has no language-model head (get_output_embeddings() gives "
            "None), so it scores no next token; load it with AutoModelForCausalLM (e.g. "
            "LlamaForCausalLM, not LlamaModel)")
    weight = getattr(head, "weight", None)
    vocab = int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None
    if vocab is None:
        raise ModelError(f"the language-model head {type(head).__name__} has no (vocab, hidden) "
                         "weight; expected an nn.Linear head")
    if not callable(tokenizer) or not hasattr(tokenizer, "decode"):
        raise InputError(f"expected the model's tokenizer (a transformers tokenizer), got "
                         f"{type(tokenizer).__name__}")
    n_tok = len(tokenizer)
    if n_tok > vocab:
        raise InputError(
            f"the tokenizer has {n_tok} tokens but the model's output layer has {vocab}: they do "
            "not belong together (ids beyond the model's vocabulary would fail or mean something "
            "else); load the tokenizer saved with this model")
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None)
    eos = {*_ids(getattr(tokenizer, "eos_token_id", None)),
           *_ids(getattr(config, "eos_token_id", None))}
    gen = getattr(model, "generation_config", None)
    eos |= set(_ids(getattr(gen, "eos_token_id", None)))
    params = inspect.signature(model.forward).parameters
    cache = next((a for a in ("cache", "past_key_values") if a in params), None)
    return LanguageModelInfo(vocab, int(context) if isinstance(context, int) else None,
                             tuple(sorted(e for e in eos if 0 <= e < vocab)),
                             "logits_to_keep" in params, cache)


_MARKERS = {"\u0120": " ", "\u2581": " ", "\u010a": "\n", "\u0109": "\t"}


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token spells, one string per id (a leading space kept as a space).

    Each id is decoded alone, so byte-level (``Ġ``) and SentencePiece (``▁``) markers become
    spaces; a piece that is only part of a multi-byte character (decoded as U+FFFD) falls back
    to its token string with the markers replaced.
    """
    out = []
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    for i, piece in zip(ids, pieces):
        text = tokenizer.decode([int(i)])
        if "\ufffd" in text or not text:
            text = "".join(_MARKERS.get(c, c) for c in str(piece))
        out.append(text)
    return out


def load_language_model(spec: str) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from ``zoo:NAME`` (:data:`unveil.zoo.language.LANGUAGE_ZOO`) or
    from a local folder saved by ``save_pretrained`` (never the network), in eval mode."""
    from ..zoo.language import LANGUAGE_ZOO, quiet_loading

    if spec.startswith("zoo:"):
        name = spec[4:]
        if name not in LANGUAGE_ZOO:
            raise ModelError(f"no language model named {name!r} in the zoo; it has: "
                             f"{', '.join(sorted(LANGUAGE_ZOO))}")
        return LANGUAGE_ZOO[name].factory()
    path = Path(spec)
    if not path.is_dir():
        raise ModelError(f"expected zoo:NAME (one of {', '.join(sorted(LANGUAGE_ZOO))}) or a "
                         f"folder saved with save_pretrained, got {spec!r}")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingExtraError("loading a language model needs transformers; install it with: "
                                "pip install 'unveil[text]'") from exc
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.eval()  # type: ignore[no-untyped-call]  # transformers' from_pretrained returns Any
    return model, tokenizer
