"""Highlighted words: subword pieces merged, coloured by score on a stated symmetric scale."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from unveil.core.explanation import Explanation  # noqa: E402
from unveil.report import plot_text, word_scores  # noqa: E402

TOKENS = ["[CLS]", "the", "movie", "was", "un", "##believ", "##ably", "bad", "[SEP]"]
SCORES = [0.9, 0.1, 0.2, -0.05, 0.3, 0.4, 0.1, -1.2, 0.5]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _exp(**meta: object) -> Explanation:
    return Explanation(values=np.array([SCORES]), inputs=np.arange(len(TOKENS))[None], method="saliency",
                       modality="text", meta={"tokens": [TOKENS], **meta})


def test_words_are_merged_and_summed() -> None:
    words, s = word_scores(_exp())
    assert words == ["the", "movie", "was", "unbelievably", "bad"]  # specials dropped, pieces joined
    assert s == pytest.approx([0.1, 0.2, -0.05, 0.8, -1.2])
    toks, raw = word_scores(_exp(), merge=False)
    assert toks == TOKENS and raw == pytest.approx(SCORES)


def test_word_ids_from_the_tokenizer_win() -> None:
    ids = [None, 0, 1, 2, 3, 3, 4, 4, None]  # a tokenizer that groups differently
    words, s = word_scores(_exp(word_ids=[ids]))
    assert words == ["the", "movie", "was", "unbeliev", "ablybad"]  # markers stripped
    assert s == pytest.approx([0.1, 0.2, -0.05, 0.7, -1.1])


def test_plot_labels_colours_and_scale() -> None:
    ax = plot_text(_exp())
    assert [t.get_text() for t in ax.texts] == ["the", "movie", "was", "unbelievably", "bad"]
    cmap = plt.get_cmap("bwr")
    faces = [t.get_bbox_patch().get_facecolor() for t in ax.texts]
    assert np.allclose(faces[4][:3], cmap(0.0)[:3])  # the most negative word: the scale's end
    assert np.allclose(faces[3][:3], cmap(matplotlib.colors.Normalize(-1.2, 1.2)(0.8))[:3])
    assert [t.get_color() for t in ax.texts][4] == "white"  # readable on a dark background
    cbar = ax.figure.axes[-1]
    assert cbar.get_xlim() == pytest.approx((-1.2, 1.2))
    assert [t.get_text() for t in cbar.get_xticklabels()] == ["-1.2", "0", "1.2"]
    xs = [t.get_position() for t in ax.texts]
    assert all(a[0] < b[0] for a, b in zip(xs, xs[1:]))  # one line, left to right


def test_explanation_plot_draws_words_and_wraps() -> None:
    ax = _exp().plot()
    assert [t.get_text() for t in ax.texts] == ["the", "movie", "was", "unbelievably", "bad"]
    assert ax.get_title() == "Saliency"
    many = ["word"] * 60
    e = Explanation(values=np.ones((1, 60)), inputs=np.zeros((1, 60), dtype=np.int64), method="saliency",
                    modality="text", meta={"tokens": many})
    ax = e.plot()
    ys = sorted({round(t.get_position()[1], 6) for t in ax.texts})
    assert len(ys) > 1  # wrapped onto several lines
    ax.figure.canvas.draw()
    inside = ax.get_window_extent()
    for t in ax.texts:  # every word stays within the Axes' width
        bb = t.get_window_extent()
        assert inside.x0 - 1 <= bb.x0 and bb.x1 <= inside.x1 + 1
