"""The prompt as token ids, and the units attributions are given to (tokens, words, sentences).

A unit is a run of positions that a method treats as one: one token, one word (a token that
starts with a space opens a new word), or one sentence of the prompt (ends at ``.``, ``!``,
``?`` or a newline). Chat-template tokens and generated tokens are always units of their own,
so every unit of the prompt is complete before the first generated token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import InputError, OptionError
from .loading import token_texts

__all__ = ["Encoded", "Spans", "encode_prompt", "make_units"]

Spans = Literal["tokens", "words", "sentences"]
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n+")


@dataclass
class Encoded:
    """The prompt's ids (P,), the text each token spells, which are the user's text (not the
    chat template or special tokens), and each token's character offsets in ``text``."""

    ids: torch.Tensor
    tokens: list[str]
    user: list[bool]
    offsets: list[tuple[int, int]] | None
    text: str


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool) -> Encoded:
    """Token ids of ``prompt`` (through the tokenizer's chat template when ``chat``)."""
    if not isinstance(prompt, str):
        raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InputError("the prompt is empty; give the text the model should continue")
    text, start = prompt, 0
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise OptionError("chat=True needs a tokenizer with a chat template, and this one "
                              "has none; pass chat=False to continue the prompt as plain text")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
        start = text.rfind(prompt)
    end = start + len(prompt)
    try:
        enc = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
        offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):  # a slow tokenizer has no offsets
        enc, offsets = tokenizer(text, add_special_tokens=not chat), None
    ids = [int(i) for i in enc["input_ids"]]
    if not ids:
        raise InputError(f"the tokenizer made no tokens of the prompt {prompt!r}")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if offsets is None:
        user = [i not in special for i in ids]
    else:
        user = [i not in special and b > a and a < end and b > start
                for i, (a, b) in zip(ids, offsets)]
    return Encoded(torch.tensor(ids, dtype=torch.long), token_texts(tokenizer, ids), user,
                   offsets, text)


def _sentence_of(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    cuts = [m.end() for m in _SENTENCE_END.finditer(text)]
    # a token belongs to the sentence of its last character (byte-level tokens start with the
    # space that follows the previous sentence's end)
    return [sum(1 for c in cuts if c <= max(a, b - 1)) for a, b in offsets]


def make_units(enc: Encoded, n_generated: int, spans: Spans) -> list[tuple[int, int]]:
    """``(start, stop)`` token positions of each unit over prompt and generated tokens."""
    if spans not in ("tokens", "words", "sentences"):
        raise OptionError(f"spans must be 'tokens', 'words' or 'sentences', got {spans!r}")
    n = len(enc.tokens)
    if spans == "sentences" and enc.offsets is None:
        raise OptionError("spans='sentences' needs a fast tokenizer (one that returns offsets); "
                          "use spans='words' or 'tokens'")
    key: list[Any] = list(range(n))  # a unit per distinct consecutive key among user tokens
    if spans == "words":
        word = 0
        for i, t in enumerate(enc.tokens):
            word += int(i > 0 and (t[:1].isspace() or not enc.user[i - 1]))
            key[i] = ("w", word)
    elif spans == "sentences":
        assert enc.offsets is not None
        key = [("s", s) for s in _sentence_of(enc.text, enc.offsets)]
    units: list[tuple[int, int]] = []
    for i in range(n):
        same = (units and enc.user[i] and enc.user[i - 1] and key[i] == key[i - 1]
                and spans != "tokens")
        if same:
            units[-1] = (units[-1][0], i + 1)
        else:
            units.append((i, i + 1))
    units += [(n + g, n + g + 1) for g in range(n_generated)]
    return units
