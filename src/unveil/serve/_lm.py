"""A served causal language model as the language views need it: the model, a tokenizer (its
own; one found beside a Hugging Face model's local files; or, for a model without one, token ids
typed as numbers), and what the model takes (context length, chat template, layers, heads).

Causal LMs that are not Hugging Face models (the zoo's induction transformer, a user's own
module) may take only ``forward(input_ids)`` and return a logits tensor: :class:`KeywordLM` lets
generation attribution call them the Hugging Face way (``model(input_ids=..., use_cache=False)``,
``.logits``) without copying any weight.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..errors import InputError

__all__ = ["IdTokenizer", "KeywordLM", "ServedLM", "served_lm"]

_ID = re.compile(r"\S+")


class IdTokenizer:
    """A stand-in tokenizer for a model that has none: the text is token ids separated by
    spaces or commas (``"0 12 7 33"``), and each id is shown as its number."""

    chat_template = None
    eos_token_id = None
    all_special_ids: list[int] = []

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = int(vocab_size)

    def __len__(self) -> int:
        return self.vocab_size

    def _parse(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids, offsets = [], []
        for m in _ID.finditer(text.replace(",", " ")):
            word = m.group()
            if not word.isdigit() or int(word) >= self.vocab_size:
                raise InputError(f"this model has no tokenizer: type token ids from 0 to "
                                 f"{self.vocab_size - 1} separated by spaces (e.g. '0 12 7 33 12'), "
                                 f"not {word[:20]!r}")
            ids.append(int(word))
            offsets.append((m.start(), m.end()))
        return ids, offsets

    def __call__(self, text: str, *, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 return_tensors: str | None = None, **_: Any) -> dict[str, Any]:
        ids, offsets = self._parse(text)
        out: dict[str, Any] = {"input_ids": torch.tensor([ids], dtype=torch.long) if return_tensors == "pt" else ids}
        if return_offsets_mapping:
            out["offset_mapping"] = offsets
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The ids the text names."""
        return self._parse(text)[0]

    def decode(self, ids: Any) -> str:
        """The ids as numbers, each after a space (as a word-level tokenizer would show them)."""
        return "".join(f" {int(i)}" for i in ids)

    def convert_ids_to_tokens(self, ids: Any) -> list[str]:
        """Each id as its number."""
        return [str(int(i)) for i in ids]


class _Output:
    """A forward's output the Hugging Face way (``.logits``) for a model that returns a tensor."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class KeywordLM(nn.Module):
    """A causal LM that is not a Hugging Face model, called the Hugging Face way: keyword
    arguments its forward does not take (``use_cache``, ``logits_to_keep``) are dropped, a
    tensor it returns is given as ``.logits``, and its ``config`` says its context length
    (``max_position_embeddings``)."""

    def __init__(self, lm: nn.Module, context: int | None) -> None:
        super().__init__()
        self.lm = lm
        self.config = SimpleNamespace(max_position_embeddings=context, eos_token_id=None)
        self.training = lm.training
        params = inspect.signature(lm.forward).parameters
        self._any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self._takes = set(params)

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()  # type: ignore[no-any-return, operator]

    def get_output_embeddings(self) -> nn.Module:
        return self.lm.get_output_embeddings()  # type: ignore[no-any-return, operator]

    def forward(self, input_ids: torch.Tensor, **kw: Any) -> Any:
        kept = {k: v for k, v in kw.items() if self._any or k in self._takes}
        out = self.lm(input_ids, **kept)
        if isinstance(out, torch.Tensor):
            return _Output(out)
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            return _Output(out[0])
        return out


def _hugging_face(model: nn.Module) -> bool:
    if "transformers" not in sys.modules:  # not imported: the model cannot be one of its classes
        return False
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _context(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_positions", "n_ctx"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _local_tokenizer(model: nn.Module) -> Any:
    """The tokenizer saved beside a Hugging Face model loaded from a local folder, or None."""
    path = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not isinstance(path, str) or not path or not Path(path).is_dir():
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:  # no tokenizer files there: the dashboard falls back to token ids
        return None


@dataclass
class ServedLM:
    """A causal LM ready for the language routes.

    ``model`` is the module itself (lens, patching and head scores read its layers), ``generator``
    what generation attribution calls (``model``, or a :class:`KeywordLM` around it), and
    ``ids_only`` says that prompts are typed as token ids.
    """

    model: nn.Module
    generator: nn.Module
    tokenizer: Any
    ids_only: bool
    context: int | None
    vocab_size: int
    chat: bool
    n_layers: int | None
    n_heads: int | None
    tokenizer_source: str
    sites: list[str]
    attention: bool = False

    def n_tokens(self, text: str, *, special: bool = True) -> int:
        """Tokens of a text (with the tokenizer's special tokens when ``special``)."""
        enc = self.tokenizer(text, add_special_tokens=special)
        ids = enc["input_ids"] if hasattr(enc, "keys") else enc
        return len(ids)


def served_lm(model: nn.Module, tokenizer: Any) -> ServedLM:
    """Bundle ``model`` with a tokenizer: ``tokenizer`` if given, else one saved with the model
    (a local Hugging Face folder), else token ids typed as numbers."""
    from ..language.loading import check_language_model

    source = "given"
    if tokenizer is None:
        tokenizer, source = _local_tokenizer(model), "found beside the model's files"
    head = model.get_output_embeddings()  # type: ignore[operator]
    vocab = int(head.weight.shape[0])
    ids_only = tokenizer is None
    if ids_only:
        tokenizer, source = IdTokenizer(vocab), "none: prompts are token ids"
    context = _context(model)
    generator = model if _hugging_face(model) else KeywordLM(model, context)
    check_language_model(generator, tokenizer)  # a tokenizer that does not fit: one clear error now
    n_layers = n_heads = None
    sites: list[str] = []
    try:
        from ..language import find_parts

        parts = find_parts(model)
        n_layers, n_heads = parts.n_layers, parts.n_heads or None
        sites = ["resid"] + (["heads"] if parts.n_heads > 0 and all(o is not None for o in parts.o_proj) else []) \
            + (["mlp"] if any(m is not None for m in parts.mlp) else [])
    except Exception:  # the inside views will say why when asked
        pass
    return ServedLM(model, generator, tokenizer, ids_only, context, vocab,
                    bool(getattr(tokenizer, "chat_template", None)), n_layers, n_heads, source, sites,
                    _reads_attention(model))


def _reads_attention(model: nn.Module) -> bool:
    """Whether unveil finds attention modules whose weights it can read (the rollout methods)."""
    from ..attention import find_sites
    from ..errors import ModelError

    try:
        return bool(find_sites(model))
    except ModelError:
        return False
