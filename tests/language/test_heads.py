"""Direct logit attribution (sums to the logit difference) and head detectors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from _lm_helpers import Toy, tiny_llama
from torch import nn

from unveil.errors import InputError, ModelError, OptionError
from unveil.language._residual import capture, find_parts, frozen_final_norm, head_writes
from unveil.language.heads import direct_logit_attribution, head_scores
from unveil.zoo.induction import InductionTransformer, repeated_tokens


def _ids(n: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 50, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("position", [-1, 4])
def test_dla_sums_to_the_logit_difference(tiny_lm: nn.Module, position: int) -> None:
    ids = _ids()
    dla = direct_logit_attribution(tiny_lm, ids, target=5, foil=7, position=position)
    with torch.no_grad():
        logits = tiny_lm(ids).logits[0, position]
    want = float(logits[5] - logits[7])
    assert dla.logit_diff == pytest.approx(want, abs=1e-6)
    assert dla.total == pytest.approx(want, rel=1e-4, abs=1e-5)
    parts = [*dla.heads.ravel(), *dla.mlp, dla.embed]
    assert sum(abs(p) > 1e-4 * max(map(abs, parts)) for p in parts) > 5  # many parts, not one
    n_layers = find_parts(tiny_lm).n_layers
    assert dla.heads.shape == (n_layers, 4)


def test_dla_on_the_attention_only_model_has_no_mlp_part(induction: InductionTransformer) -> None:
    ids = repeated_tokens(1, 10, seed=2)[:, :-1]
    target, foil = int(ids[0, 10]), int(ids[0, 5])  # the last token is r8: next comes r9
    dla = direct_logit_attribution(induction, ids, target=target, foil=foil)
    assert dla.total == pytest.approx(dla.logit_diff, rel=1e-4, abs=1e-5)
    assert dla.logit_diff > 2  # the model predicts the copied token
    assert (dla.mlp == 0).all() and (dla.attn_bias == 0).all()
    # the copying is done in layer 2 (index 1): its heads carry most of the difference
    assert dla.heads[1].sum() > dla.heads[0].sum()


def test_each_heads_write_is_its_slice_of_the_output_projection() -> None:
    model = tiny_llama()
    parts = find_parts(model)
    ids = _ids()
    _, st = capture(model, parts, ids, sites=("z",))
    z, o = st["z"][1], parts.o_proj[1]
    assert z is not None and o is not None
    writes = head_writes(o, z.double(), parts.n_heads)
    with torch.no_grad():
        full = o(z)
    torch.testing.assert_close(writes.sum(-2).float(), full, atol=1e-6, rtol=1e-5)
    # grouped-query attention: 4 query heads, 2 key/value heads, still 4 slices
    assert writes.shape[-2] == 4 and model.config.num_key_value_heads == 2


def test_the_frozen_norm_reproduces_the_final_norm(tiny_lm: nn.Module) -> None:
    parts = find_parts(tiny_lm)
    _, st = capture(tiny_lm, parts, _ids(), sites=("resid",))
    x = st["resid"][-1]
    assert x is not None
    linear, bias = frozen_final_norm(parts, x[0])
    with torch.no_grad():
        torch.testing.assert_close(linear(x[0]) + bias, parts.final_norm(x[0]))
        # linear in its argument: f(a + b) = f(a) + f(b)
        a, b = torch.randn(2, *x[0].shape)
        torch.testing.assert_close(linear(a + b), linear(a) + linear(b))


def test_head_scores_are_attention_averages(tiny_lm: nn.Module) -> None:
    scores = head_scores(tiny_lm, half=6, n_sequences=2)
    for s in (scores.previous_token, scores.duplicate_token, scores.induction):
        assert s.shape == (find_parts(tiny_lm).n_layers, 4)
        assert (s >= 0).all() and (s <= 1).all()
    assert len(scores.top("induction", 2)) == 2
    df = scores.to_pandas()
    assert {"layer", "head", "previous_token", "duplicate_token", "induction"} <= set(df)
    html = scores._repr_html_()
    assert html.count("<table") == 3 and not re.search(r"(src|href)=", html)


def test_dla_renders(induction: InductionTransformer) -> None:
    dla = direct_logit_attribution(induction, repeated_tokens(1, 5, seed=1), target=3, foil=4)
    df = dla.to_pandas()
    assert df["value"].sum() == pytest.approx(dla.total, abs=1e-6)
    assert dla.grid().values.shape == (2, 4 + 2)
    assert "logit difference" in dla._repr_html_()


def test_bad_inputs(tiny_lm: nn.Module, induction: InductionTransformer) -> None:
    with pytest.raises(InputError, match="position=20 is outside the prompt's 9 tokens"):
        direct_logit_attribution(tiny_lm, _ids(), target=1, foil=2, position=20)
    with pytest.raises(InputError, match="foil=99 is not a token id"):
        direct_logit_attribution(tiny_lm, _ids(), target=1, foil=99)
    with pytest.raises(OptionError, match="half must be"):
        head_scores(tiny_lm, half=1)
    with pytest.raises(OptionError, match="kind="):
        head_scores(induction, half=4, n_sequences=1).top("copying")


def test_a_model_without_heads_is_a_clear_error() -> None:
    model = Toy(linear=False).eval()
    with pytest.raises(ModelError, match="attention heads of this model were not found"):
        direct_logit_attribution(model, [1, 2, 3], target=1, foil=2)


def test_detector_scores_match_a_hand_computation(induction: InductionTransformer) -> None:
    scores = head_scores(induction, half=7, n_sequences=3, seed=11)
    ids = repeated_tokens(3, 7, vocab_size=64, bos=0, seed=11)
    _, st = capture(induction, find_parts(induction), ids, sites=("attn",))
    a = st["attn"][1]
    assert a is not None
    by_hand = np.mean([[a[n, 2, i, i - 6].item() for i in range(8, 15)] for n in range(3)])
    assert scores.induction[1, 2] == pytest.approx(by_hand, abs=1e-6)
