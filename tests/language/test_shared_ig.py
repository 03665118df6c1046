"""IG of every generated token from shared forwards equals the registry's IG run per token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.language._lm_helpers import TINY
from tests.language._lm_models import tiny_llama, tiny_tokenizer

from unveil.core.explain import explain
from unveil.language import NextTokenScore, explain_generation
from unveil.language._shared_ig import plan_segments, shared_ig

PROMPT = "When Mary and John went to the store,"


def _per_token(model, full, p, foil, *, prompt_only, base_id, n_steps):
    """The general path: one registry IG call per generated token."""
    rows = []
    for g in range(len(full) - p):
        length = p + g
        ids = full[None, :length]
        ref = ids.clone()
        if prompt_only:
            ref[:, :p] = base_id
        else:
            ref[:] = base_id
        exp = explain(NextTokenScore(model, int(full[length]), foil), ids,
                      method="integrated_gradients", target=0, n_steps=n_steps, baseline=ref)
        rows.append((np.asarray(exp.values, dtype=np.float64).reshape(-1), float(exp.delta[0]),
                     float(np.asarray(exp.baseline_outputs).reshape(-1)[0])))
    return rows


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize(("prompt_only", "foil", "base_id"), [(True, None, 0), (False, 7, 3)])
def test_shared_forwards_equal_one_ig_per_token(arch, prompt_only, foil, base_id):
    model = TINY[arch]()
    g = torch.Generator().manual_seed(1)
    full = torch.randint(3, 50, (13,), generator=g)
    p = 8
    res = shared_ig(model, full, p, None if foil is None else [foil] * 5, base_id=base_id,
                    prompt_only=prompt_only, n_steps=8, batch_size=3)
    want = _per_token(model, full, p, foil, prompt_only=prompt_only, base_id=base_id, n_steps=8)
    for i, (v, delta, fb) in enumerate(want):
        np.testing.assert_allclose(res.values[i, : p + i], v, atol=2e-5, rtol=1e-4)
        assert res.delta[i] == pytest.approx(delta, abs=1e-4)
        assert res.baseline_outputs[i] == pytest.approx(fb, abs=1e-5)
        if prompt_only:  # tokens generated before are held fixed: nothing flows to them
            assert np.abs(res.values[i, p : p + i]).max(initial=0) == 0


def test_segments_cover_the_tokens_in_order_and_split_short_prompts():
    for p, g in [(1, 1), (3, 20), (30, 20), (500, 4)]:
        segs = plan_segments(p, g)
        assert segs[0][0] == 0 and segs[-1][1] == g
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(segs, segs[1:]))
    assert len(plan_segments(3, 20)) > 1  # a short prompt: early tokens get shorter sequences
    assert len(plan_segments(500, 4)) == 1  # a long prompt: one shared forward


def test_explain_generation_uses_it_and_the_memory_budget_only_changes_chunks():
    import unveil as uv

    model, tok = tiny_llama(), tiny_tokenizer()
    whole = explain_generation(model, tok, PROMPT, max_new_tokens=4, n_steps=8)
    budget = uv.core.batching.get_memory_budget()
    uv.set_memory_budget(64 * 1024)
    try:
        tight = explain_generation(model, tok, PROMPT, max_new_tokens=4, n_steps=8)
    finally:
        uv.set_memory_budget(budget)
    np.testing.assert_allclose(tight.values, whole.values, atol=1e-6)
    # one forward per path point per segment (plus the input and the baseline), not per token
    assert whole.n_evals < 4 * 8
