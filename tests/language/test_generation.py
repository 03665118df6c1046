"""Generation attribution on a tiny random Llama (no download): axioms and bookkeeping."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from tests.language._lm_models import tiny_llama, tiny_tokenizer

from unveil.errors import OptionError
from unveil.language import (
    GenerationExplanation,
    NextTokenScore,
    explain_generation,
    generate_greedy,
    load_generation,
)

PROMPT = "When Mary and John went to the store,"


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(), tiny_tokenizer()


def test_ig_completeness_per_generated_token(lm):
    model, tok = lm
    res = explain_generation(model, tok, PROMPT, max_new_tokens=3, n_steps="auto", tol=0.005)
    gap = res.outputs - res.baseline_outputs
    assert np.all(np.abs(gap) > 1e-3)  # not a trivial case
    for g in range(3):
        row = res.values[g]
        total = np.nansum(row)
        np.testing.assert_allclose(total, gap[g], rtol=0.01, atol=1e-4)
        np.testing.assert_allclose(total - gap[g], res.delta[g], atol=1e-5)
        # sources are exactly the tokens before the explained one
        assert np.isfinite(row[: res.n_prompt + g]).all() and np.isnan(row[res.n_prompt + g:]).all()


def test_outputs_are_the_log_probabilities_of_the_generated_tokens(lm):
    model, tok = lm
    res = explain_generation(model, tok, PROMPT, max_new_tokens=3, method="saliency")
    ids = torch.as_tensor(res.ids)
    with torch.no_grad():
        lp = model(ids[None]).logits[0].log_softmax(-1)
    p = res.n_prompt
    want = lp[torch.arange(p - 1, len(ids) - 1), ids[p:]].double().numpy()
    assert res.outputs is not None
    np.testing.assert_allclose(res.outputs, want, atol=1e-5)
    np.testing.assert_allclose(res.scores["log_prob"], want, atol=1e-5)
    np.testing.assert_allclose(res.scores["prob"], np.exp(want), atol=1e-6)
    probs = lp[p - 1 : -1].exp().double()
    np.testing.assert_allclose(res.scores["entropy"], -(probs * probs.log()).sum(-1).numpy(),
                               atol=1e-4)
    # greedy: every generated token was the most probable one
    assert torch.equal(lp[p - 1 : -1].argmax(-1), ids[p:])


def test_greedy_with_and_without_the_cache_agree(lm):
    model, tok = lm
    ids = torch.tensor(tok(PROMPT).input_ids)
    cached = generate_greedy(model, ids, 5, cache_arg="cache")
    plain = generate_greedy(model, ids, 5, cache_arg=None)
    assert torch.equal(cached, plain) and len(cached) == 5


def test_contrast_is_the_difference_of_the_two_attributions(lm):
    """IG is linear in the explained score: IG(log p(y) - log p(c)) = IG(log p(y)) - IG(log p(c))."""
    model, tok = lm
    foil = tok.encode(" and", add_special_tokens=False)
    assert len(foil) == 1
    res = explain_generation(model, tok, PROMPT, max_new_tokens=2, method="integrated_gradients",
                             n_steps=16, contrast=foil[0])
    assert res.objective == "log_prob_diff" and res.foils == [" and", " and"]
    full = torch.as_tensor(res.ids)
    for g in range(2):
        x = full[None, : res.n_prompt + g]
        from unveil.core.explain import explain

        a = explain(NextTokenScore(model, int(full[res.n_prompt + g])), x, target=0, n_steps=16)
        b = explain(NextTokenScore(model, foil[0]), x, target=0, n_steps=16)
        np.testing.assert_allclose(res.values[g, : x.shape[1]], (a.values - b.values)[0],
                                   atol=1e-5)
    np.testing.assert_allclose(res.scores["prob_diff"], res.scores["prob"] - res.scores["foil_prob"])


def test_a_given_continuation_is_explained_as_is(lm):
    model, tok = lm
    res = explain_generation(model, tok, PROMPT, continuation=" John gave", method="feature_ablation")
    assert res.text == " John gave" and not res.params["generated"]
    assert res.generated == [tok.decode([i]) for i in tok.encode(" John gave")]


def test_feature_ablation_is_the_drop_when_a_token_becomes_id_0(lm):
    model, tok = lm
    res = explain_generation(model, tok, PROMPT, max_new_tokens=2, method="feature_ablation")
    full = torch.as_tensor(res.ids)
    g = 1
    obj = NextTokenScore(model, int(full[res.n_prompt + g]))
    x = full[: res.n_prompt + g]
    with torch.no_grad():
        f = obj(x[None])[0, 0]
        for i in (0, 3, res.n_prompt):  # a prompt token, and the first generated one
            y = x.clone()
            y[i] = 0
            assert res.values[g, i] == pytest.approx(float(f - obj(y[None])[0, 0]), abs=1e-5)


@pytest.mark.parametrize("method", ["input_x_gradient", "occlusion", "permutation_shapley",
                                    "kernel_shap", "smoothgrad", "grad_attention_rollout"])
def test_other_registry_methods_run(lm, method):
    model, tok = lm
    opts: dict[str, Any] = {"seed": 0} if method in ("permutation_shapley", "kernel_shap",
                                                     "smoothgrad") else {}
    if method in ("permutation_shapley", "kernel_shap"):
        opts["n_samples"] = 64
    res = explain_generation(model, tok, PROMPT, max_new_tokens=2, method=method, **opts)
    assert res.values.shape == (2, res.n_prompt + 2)
    assert np.isfinite(res.values[1, : res.n_prompt + 1]).all()
    assert np.abs(res.values[0, : res.n_prompt]).max() > 0


def test_sentence_spans_with_exact_shapley_are_efficient(lm):
    """Shapley values over sentences sum to f(x) - f(every sentence removed) (efficiency)."""
    model, tok = lm
    prompt = "The capital of France is Paris. The capital of Italy is"
    res = explain_generation(model, tok, prompt, max_new_tokens=1, method="exact_shapley",
                             spans="sentences")
    texts = [res.unit_text(u) for u in range(len(res.units))]
    assert texts[:2] == ["The capital of France is Paris. ", "The capital of Italy is"]
    full = torch.as_tensor(res.ids)
    obj = NextTokenScore(model, int(full[res.n_prompt]))
    with torch.no_grad():
        f = obj(full[None, : res.n_prompt])[0, 0]
        f0 = obj(torch.zeros(1, res.n_prompt, dtype=torch.long))[0, 0]
    assert res.values[0, :2].sum() == pytest.approx(float(f - f0), abs=1e-5)


def test_word_spans_sum_token_gradients(lm):
    model, tok = lm
    by_token = explain_generation(model, tok, PROMPT, max_new_tokens=1, method="saliency")
    by_word = explain_generation(model, tok, PROMPT, max_new_tokens=1, method="saliency",
                                 spans="words")
    words = [by_word.unit_text(u) for u in range(len(by_word.units))]
    assert words[:4] == ["When", " Mary", " and", " John"]
    for u, (a, b) in enumerate(by_word.units[:-1]):
        assert by_word.values[0, u] == pytest.approx(by_token.values[0, a:b].sum(), rel=1e-5)


def test_chat_template_tokens_are_marked(lm):
    model, tok = lm
    res = explain_generation(model, tok, "Where is Paris?", max_new_tokens=2, chat=True,
                             method="saliency")
    user = "".join(t for t, k in zip(res.tokens, res.kinds) if k == "prompt")
    assert user == "Where is Paris?"
    assert res.kinds[0] == "template" and res.tokens[0] == "<|im_start|>"
    assert "".join(res.tokens[: res.n_prompt]).endswith("<|im_start|>assistant\n")


def test_model_left_as_it_was(lm):
    model, tok = lm
    flags = [p.requires_grad for p in model.parameters()]
    threads = torch.get_num_threads()
    model.model.layers[0].train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            explain_generation(model, tok, PROMPT, max_new_tokens=1, n_steps=4)
        assert model.model.layers[0].training and not model.training
    finally:
        model.model.layers[0].eval()
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.get_num_threads() == threads


def test_html_heat_map_is_escaped_and_self_contained(lm, tmp_path):
    model, tok = lm
    res = explain_generation(model, tok, "<script>alert(1)</script> Mary", max_new_tokens=2,
                             method="saliency")
    page = res.to_html(full=True)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page
    assert page.count("<tr>") >= res.n_prompt
    assert res._repr_html_().startswith("<style>")
    res.save(tmp_path / "g.html")
    back = load_generation(res.save(tmp_path / "g.json"))
    assert isinstance(back, GenerationExplanation)
    np.testing.assert_array_equal(back.values, res.values)  # NaN in the same places
    assert back.tokens == res.tokens and back.alternatives == res.alternatives
    json.loads((tmp_path / "g.json").read_text())  # strict JSON: no NaN literals
    with pytest.raises(OptionError, match=r"\.html or \.json"):
        res.save(tmp_path / "g.txt")


def test_top_sources_rank_by_magnitude(lm):
    model, tok = lm
    res = explain_generation(model, tok, PROMPT, max_new_tokens=2, method="input_x_gradient")
    top = res.top_sources(1, 3)
    mags = [abs(s.value) for s in top]
    assert mags == sorted(mags, reverse=True)
    assert mags[0] == pytest.approx(np.nanmax(np.abs(res.values[1])))


def test_attention_rollout_reads_the_predicting_row(lm):
    """Rollout at the last position: a distribution over the tokens it can see (rows of a
    causal rollout sum to 1), not the first token's row (which sees only itself)."""
    model, tok = lm
    res = explain_generation(model, tok, PROMPT, max_new_tokens=2, method="attention_rollout")
    for g in range(2):
        row = res.values[g, : res.n_prompt + g]
        assert row.sum() == pytest.approx(1.0, abs=1e-4)
        assert (row >= 0).all() and (row[:-1] > 0).sum() > 1


def test_ig_steps_in_chunks_give_the_same_values(lm):
    """Path points run in chunks (batch_size= or the memory budget): same values."""
    import unveil as uv

    model, tok = lm
    whole = explain_generation(model, tok, PROMPT, max_new_tokens=2, n_steps=16)
    small = explain_generation(model, tok, PROMPT, max_new_tokens=2, n_steps=16, batch_size=3)
    budget = uv.core.batching.get_memory_budget()
    uv.set_memory_budget(256 * 1024)
    try:
        tight = explain_generation(model, tok, PROMPT, max_new_tokens=2, n_steps=16)
    finally:
        uv.set_memory_budget(budget)
    np.testing.assert_allclose(small.values, whole.values, atol=1e-5)
    np.testing.assert_allclose(tight.values, whole.values, atol=1e-5)
