"""Tokenizer output goes to ``uv.explain`` as it goes to ``uv.attention``; the words (subwords
merged) reach the plot, the HTML and the saved file (issue 18)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _text_helpers import minilm_tokenizer, tiny_bert  # noqa: E402

import unveil as uv  # noqa: E402
from unveil.errors import InputError  # noqa: E402

SENTENCES = ["an unbelievably good movie", "dull plot"]


@pytest.fixture(scope="module")
def encoded():
    tok = minilm_tokenizer()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    model = tiny_bert("BertForSequenceClassification", vocab_size=tok.vocab_size)
    assert "##" in " ".join(enc.tokens(0))  # "unbelievably" is split into pieces
    return tok, enc, model


def _plot_words(exp: uv.Explanation, i: int) -> list[str]:
    ax = exp.plot(i)
    try:
        return [t.get_text() for t in ax.texts]
    finally:
        plt.close(ax.figure)


def test_tokenizer_output_is_explained_with_its_words(encoded, tmp_path: Path) -> None:
    tok, enc, model = encoded
    exp = uv.explain(model, enc, method="integrated_gradients", n_steps=8)
    ids = enc["input_ids"].numpy()
    np.testing.assert_array_equal(exp.inputs, ids)
    assert exp.meta["tokens"] == [enc.tokens(i) for i in range(len(SENTENCES))]
    assert np.abs(exp.values).max() > 0
    words = _plot_words(exp, 0)
    assert words == ["an", "unbelievably", "good", "movie"]  # pieces merged, [CLS]/[SEP] left out
    assert _plot_words(exp, 1) == ["dull", "plot"]  # padding is not shown
    html = exp.to_html()
    assert "unbelievably" in html and "##" not in html and "#101" not in html
    back = uv.load(exp.save(tmp_path / "text.npz"))
    assert back.meta["tokens"] == exp.meta["tokens"]
    assert _plot_words(back, 0) == words
    # the padding was masked: the short row's scores are its scores alone
    alone = uv.explain(model, tok(SENTENCES[1:], return_tensors="pt"), method="integrated_gradients",
                       n_steps=8)
    assert exp.outputs is not None and alone.outputs is not None
    np.testing.assert_allclose(exp.outputs[1], alone.outputs[0], rtol=1e-4, atol=1e-5)


def test_a_mapping_given_to_an_explainer_points_to_explain(encoded) -> None:
    _, enc, model = encoded
    with pytest.raises(InputError, match=r"tokenizer output goes to unveil.explain\(model, encoding\)"):
        uv.IntegratedGradients(model)(dict(enc))


def test_a_row_of_the_explanation_keeps_its_own_words(encoded) -> None:
    _, enc, model = encoded
    # a module is found inside the wrapper that masks the padding (its dotted name there differs)
    exp = uv.explain(model, enc, method="saliency", layer=model.bert.embeddings.word_embeddings)
    assert exp.meta["layer"] == "model.bert.embeddings.word_embeddings"
    assert exp[1].meta["tokens"] == [enc.tokens(1)]
    assert _plot_words(exp[1], 0) == ["dull", "plot"]
    assert exp[[1, 0]].meta["tokens"] == [enc.tokens(1), enc.tokens(0)]
