"""A new user's tour on non-Llama decoders built on the spot (GPT-2, GPT-NeoX, random init):
generation attribution, the lens, patching and head detectors, each with an identity checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.language._lm_models import tiny_tokenizer

import unveil as uv

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = PROMPT.replace("John gave", "Mary gave")


def _gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tiny_tokenizer()), n_embd=48, n_layer=2, n_head=4,
                     n_positions=128, bos_token_id=0, eos_token_id=2)
    return GPT2LMHeadModel(cfg).eval()


def _neox() -> torch.nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tiny_tokenizer()), hidden_size=48, intermediate_size=96,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                        bos_token_id=0, eos_token_id=2)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(params=["gpt2", "neox"], scope="module")
def lm(request: pytest.FixtureRequest) -> torch.nn.Module:
    return {"gpt2": _gpt2, "neox": _neox}[request.param]()


def test_generation_ig_is_complete_and_the_chat_template_applies(lm: torch.nn.Module) -> None:
    tok = tiny_tokenizer()
    res = uv.explain_generation(lm, tok, PROMPT, max_new_tokens=3, n_steps=128)
    assert res.delta is not None and res.outputs is not None
    gap = res.outputs - res.baseline_outputs
    np.testing.assert_allclose(res.delta, 0, atol=1e-3 * (1 + np.abs(gap).max()))
    chat = uv.explain_generation(lm, tok, PROMPT, chat=True, max_new_tokens=2,
                                 method="feature_ablation", spans="words")
    assert "template" in chat.kinds and chat.values.shape[0] == 2
    assert "<table" in chat._repr_html_() or "<svg" in chat._repr_html_()


def test_inside_views_on_the_architecture(lm: torch.nn.Module) -> None:
    tok = tiny_tokenizer()
    lens = uv.language.logit_lens(lm, PROMPT, tokenizer=tok)
    with torch.no_grad():
        logits = lm(torch.tensor([tok.encode(PROMPT)])).logits[0]
    torch.testing.assert_close(lens.logits[-1], logits, atol=1e-4, rtol=1e-4)
    patch = uv.language.activation_patching(lm, PROMPT, CORRUPTED, target=" to", foil=" the",
                                            tokenizer=tok, sites=("resid", "heads", "mlp"))
    # the clean residual stream after the last layer at the last position restores the metric
    assert patch.resid[-1, -1] == pytest.approx(1.0, abs=1e-4)
    heads = uv.language.head_scores(lm, half=8, n_sequences=4)
    assert heads.induction.shape == (2, 4)
    assert np.all((heads.previous_token >= 0) & (heads.previous_token <= 1))
