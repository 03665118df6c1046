"""Per-generated-token IG against inseq 0.7.1 (decoder-only attribution: every generated token
to the prompt and the tokens before it, all moving from the unknown token's embedding, score
log p). inseq installs with ``pip install --no-deps inseq==0.7.1 jaxtyping "typeguard<=2.13.3"
treescope wadler-lindig`` and imports under the pinned transformers; skipped without it."""

from __future__ import annotations

import numpy as np
import pytest
from tests.language._lm_models import smollm2_or_skip, tiny_llama, tiny_tokenizer

from unveil.language import explain_generation

inseq = pytest.importorskip("inseq")


def _inseq_ig(model, tok, prompt: str, continuation: str, n_steps: int) -> np.ndarray:
    """inseq's IG, summed over the embedding dimension: (generated, positions)."""
    wrapped = inseq.load_model(model, "integrated_gradients", tokenizer=tok)
    out = wrapped.attribute(prompt, generated_texts=prompt + continuation, n_steps=n_steps,
                            attributed_fn="probability", logprob=True, show_progress=False)
    seq = out.sequence_attributions[0]
    return seq.target_attributions.sum(-1).T.double().numpy()


def _check(res, theirs: np.ndarray, *, rtol: float, corr: float) -> None:
    assert theirs.shape[0] == len(res.generated)
    for g in range(theirs.shape[0]):
        n = res.n_prompt + g  # the sources of token g: the prompt and the g tokens before it
        mine = res.values[g, :n]
        assert float(np.corrcoef(mine, theirs[g, :n])[0, 1]) >= corr
        np.testing.assert_allclose(mine, theirs[g, :n], rtol=rtol,
                                   atol=rtol * np.abs(theirs[g, :n]).max())


def test_ig_matches_inseq_on_a_tiny_llama():
    model, tok = tiny_llama(), tiny_tokenizer()
    prompt, cont = "When Mary and John went to the store,", " John gave"
    res = explain_generation(model, tok, prompt, continuation=cont, n_steps=8,
                             baseline=tok.unk_token_id)
    _check(res, _inseq_ig(model, tok, prompt, cont, 8), rtol=1e-4, corr=0.9999)


def test_ig_matches_inseq_on_smollm2():
    model, tok = smollm2_or_skip()
    prompt = "When Mary and John went to the store, John gave a drink to"
    res = explain_generation(model, tok, prompt, max_new_tokens=2, n_steps=8,
                             baseline=tok.unk_token_id)
    cont = tok.decode(res.ids[res.n_prompt:].tolist())
    _check(res, _inseq_ig(model, tok, prompt, cont, 8), rtol=0.02, corr=0.99)
