"""Merging subword scores into words."""

from __future__ import annotations

import numpy as np
import pytest

from unveil.errors import InputError, OptionError
from unveil.text import merge_subwords


def test_wordpiece():
    tokens = ["[CLS]", "the", "un", "##believ", "##able", "plot", "[SEP]", "[PAD]"]
    scores = np.array([9.0, 1, 2, 3, 4, 5, 9, 9])
    words, s = merge_subwords(tokens, scores)
    assert words == ["the", "unbelievable", "plot"]
    np.testing.assert_allclose(s, [1, 9, 5])
    assert s.sum() == scores[1:6].sum()  # sums keep the total of the kept tokens


def test_sentencepiece_and_byte_bpe():
    sp = ["<s>", "\u2581The", "\u2581un", "believ", "able", "\u2581plot", "</s>"]
    words, s = merge_subwords(sp, np.arange(7.0))
    assert words == ["The", "unbelievable", "plot"]
    np.testing.assert_allclose(s, [1, 2 + 3 + 4, 5])
    bpe = ["<s>", "The", "\u0120un", "believ", "able", "\u0120plot", "</s>"]
    words, s = merge_subwords(bpe, np.arange(7.0))
    assert words == ["The", "unbelievable", "plot"]
    np.testing.assert_allclose(s, [1, 9, 5])


def test_word_ids_reduce_and_vectors():
    tokens = ["[CLS]", "play", "##ing", "now", "[SEP]"]
    word_ids = [None, 0, 0, 1, None]
    scores = np.array([[0, 0], [1, -1], [3, 5], [2, 2], [7, 7]], dtype=float)
    words, s = merge_subwords(tokens, scores, word_ids=word_ids, reduce="mean")
    assert words == ["playing", "now"]
    np.testing.assert_allclose(s, [[2, 2], [2, 2]])
    _, m = merge_subwords(tokens, scores, word_ids=word_ids, reduce="max")
    np.testing.assert_allclose(m, [[3, 5], [2, 2]])
    words, s = merge_subwords(tokens, scores[:, 0], skip=[])
    assert words == ["[CLS]", "playing", "now", "[SEP]"]


def test_merge_errors():
    with pytest.raises(InputError, match="one score per token"):
        merge_subwords(["a", "b"], [1.0])
    with pytest.raises(InputError, match="word_ids has 1 entries"):
        merge_subwords(["a", "b"], [1.0, 2.0], word_ids=[0])
    with pytest.raises(OptionError, match="reduce must be"):
        merge_subwords(["a"], [1.0], reduce="median")  # type: ignore[arg-type]
