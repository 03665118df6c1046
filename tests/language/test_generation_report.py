"""The report page of a generation explanation (``unveil.report.generation``)."""

from __future__ import annotations

import numpy as np
from tests.language._lm_models import tiny_llama, tiny_tokenizer

import unveil as uv
from unveil.report.generation import generation_page, generation_summary


def test_page_states_each_token_and_its_strongest_sources():
    res = uv.explain_generation(tiny_llama(), tiny_tokenizer(), "Mary & <b>John</b> went",
                                max_new_tokens=2, method="input_x_gradient")
    lines = generation_summary(res)
    assert len(lines) == 1 + 2
    for g, tok in enumerate(res.generated):
        assert repr(tok) in lines[1 + g] and f"p = {res.scores['prob'][g]:.2f}" in lines[1 + g]
        best = res.top_sources(g, 1, by="positive")[0]
        if best.value > 0:
            assert repr(best.text) in lines[1 + g]
    page = generation_page(res, title="t <x>")
    assert "<b>John</b>" not in page and "&lt;b&gt;John&lt;/b&gt;" in page
    assert "t &lt;x&gt;" in page and "<script" not in page


def test_page_cautions_when_ig_misses_completeness():
    res = uv.explain_generation(tiny_llama(), tiny_tokenizer(), "When Mary and John went",
                                max_new_tokens=1, n_steps=1)
    assert res.delta is not None and res.outputs is not None and res.baseline_outputs is not None
    gap = abs(res.delta[0]) / abs(res.outputs[0] - res.baseline_outputs[0])
    caution = [s for s in generation_summary(res) if s.startswith("Caution")]
    assert bool(caution) == bool(gap > 0.1)
    res.delta = np.array([10.0 * abs(res.outputs[0] - res.baseline_outputs[0])])
    assert any(s.startswith("Caution") for s in generation_summary(res))
