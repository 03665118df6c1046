"""Merge subword token scores into word scores.

Tokenizers split words into pieces: WordPiece (BERT) marks continuations with ``##``,
SentencePiece (T5, XLM-R) marks word starts with ``▁``, byte-level BPE (GPT-2, RoBERTa) with
``Ġ``. Attributions come per piece; people read words. Summing the pieces of a word keeps
additive attributions additive (the words' scores still add up to the total).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..errors import InputError, OptionError

__all__ = ["SPECIAL_TOKENS", "merge_subwords"]

SPECIAL_TOKENS = frozenset(
    {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>", "<|endoftext|>"}
)
_START_MARKERS = ("\u2581", "\u0120")  # SentencePiece '▁', byte-level BPE 'Ġ'
Reduce = Literal["sum", "mean", "max"]


def _groups_from_markers(tokens: Sequence[str], skip: frozenset[str]) -> list[int | None]:
    """A word index per token (None for skipped tokens), from the subword markers."""
    start_mode = any(t.startswith(_START_MARKERS) for t in tokens)
    out: list[int | None] = []
    word = -1
    prev_kept = False
    for tok in tokens:
        if tok in skip:
            out.append(None)
            prev_kept = False
            continue
        if start_mode:
            new = tok.startswith(_START_MARKERS) or not prev_kept
        else:
            new = not tok.startswith("##") or not prev_kept
        word += int(new)
        out.append(word)
        prev_kept = True
    return out


def _strip(tok: str) -> str:
    if tok.startswith("##"):
        return tok[2:]
    if tok.startswith(_START_MARKERS):
        return tok[1:]
    return tok


def _reduce(a: np.ndarray, how: str) -> np.ndarray:
    if how == "sum":
        return np.asarray(a.sum(axis=0))
    if how == "mean":
        return np.asarray(a.mean(axis=0))
    return np.asarray(a.max(axis=0))


def merge_subwords(
    tokens: Sequence[str],
    scores: np.ndarray | Sequence[float],
    *,
    word_ids: Sequence[int | None] | None = None,
    skip: Sequence[str] | None = None,
    reduce: Reduce = "sum",
) -> tuple[list[str], np.ndarray]:
    """Combine per-token scores into per-word scores.

    Parameters
    ----------
    tokens : sequence of str
        The tokens of one sequence (e.g. ``tokenizer.convert_ids_to_tokens(ids)``).
    scores : array
        (T,) or (T, ...) one score (or vector) per token.
    word_ids : sequence of int or None, optional
        The word of each token as a fast tokenizer gives it (``encoding.word_ids(i)``; None for
        special tokens). Without it, words are read from the ``##`` / ``▁`` / ``Ġ`` markers.
    skip : sequence of str, optional
        Tokens to leave out (default :data:`SPECIAL_TOKENS`: ``[CLS]``, ``[SEP]``, padding ...).
    reduce : str
        ``"sum"`` (default; keeps the total), ``"mean"`` or ``"max"`` over a word's pieces.

    Returns
    -------
    words : list of str
        The words, markers removed.
    word_scores : ndarray
        (W,) or (W, ...) in word order.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 0 or s.shape[0] != len(tokens):
        raise InputError(f"need one score per token: {len(tokens)} tokens, scores of shape {s.shape}")
    if reduce not in ("sum", "mean", "max"):
        raise OptionError(f"reduce must be 'sum', 'mean' or 'max', got {reduce!r}")
    skip_set = SPECIAL_TOKENS if skip is None else frozenset(skip)
    if word_ids is not None:
        if len(word_ids) != len(tokens):
            raise InputError(f"word_ids has {len(word_ids)} entries for {len(tokens)} tokens")
        groups = [None if w is None or tokens[i] in skip_set else int(w)
                  for i, w in enumerate(word_ids)]
    else:
        groups = _groups_from_markers(tokens, skip_set)
    order: list[int] = []
    pieces: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        if g is None:
            continue
        if g not in pieces:
            pieces[g] = []
            order.append(g)
        pieces[g].append(i)
    words = ["".join(_strip(tokens[i]) for i in pieces[g]) for g in order]
    merged = [_reduce(s[pieces[g]], reduce) for g in order]
    out = np.stack(merged) if merged else np.zeros((0, *s.shape[1:]))
    return words, out
