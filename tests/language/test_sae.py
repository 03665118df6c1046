"""Sparse autoencoders: quality figures against hand computations, training, feature attribution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _lm_helpers import Toy

from unveil.errors import InputError, LayerNotFoundError, OptionError
from unveil.language._residual import capture, find_parts
from unveil.language.sae import (
    SparseAutoencoder,
    explained_variance,
    feature_attribution,
    layer_activations,
    mean_l0,
    sae_ce_score,
    sae_metrics,
    train_sae,
)
from unveil.zoo.induction import InductionTransformer, repeated_tokens


def identity_sae(d: int) -> SparseAutoencoder:
    """2d features ReLU(x), ReLU(-x); decoding ReLU(x) - ReLU(-x) gives x back exactly."""
    sae = SparseAutoencoder(d, 2 * d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def test_explained_variance_and_l0_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])
    x_hat = torch.tensor([[1.0, 1.0], [2.0, 2.0], [2.0, 3.0]])
    # Var(x) per column (population): col0 mean 2 -> (1+1+0)/3; col1 mean 2 -> (4+0+4)/3
    var_x = 2 / 3 + 8 / 3
    # residual r = x - x_hat = [[0,-1],[1,0],[0,1]]: col0 mean 1/3 -> (1/9+4/9+1/9)/3 = 2/9,
    # col1 mean 0 -> (1+0+1)/3 = 2/3
    var_r = 2 / 9 + 2 / 3
    assert explained_variance(x, x_hat) == pytest.approx(1 - var_r / var_x)
    f = torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.1, 3.0], [0.0, 0.0, 0.0]])
    assert mean_l0(f) == pytest.approx((1 + 3 + 0) / 3)


def test_an_identity_sae_explains_everything_and_costs_no_loss(induction: InductionTransformer) -> None:
    sae = identity_sae(64)
    prompts = repeated_tokens(4, 10, seed=0)
    acts = layer_activations(induction, prompts, 0)
    assert acts.shape == (4 * 21, 64)
    m = sae_metrics(sae, acts)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-6) and m["mse"] < 1e-10
    assert m["l0"] == pytest.approx(float((acts != 0).sum(-1).double().mean()))  # one per non-zero dim
    ce = sae_ce_score(induction, prompts, 0, sae)
    assert ce.score == pytest.approx(1.0, abs=1e-4)
    assert ce.zero_ablated > ce.clean + 0.5  # zeroing layer 1 hurts: the score is not 0/0


def test_the_ce_parts_are_the_next_token_losses(induction: InductionTransformer) -> None:
    prompts = repeated_tokens(3, 8, seed=1)
    zero = SparseAutoencoder(64, 16)  # all weights 0: reconstructs every activation as 0
    ce = sae_ce_score(induction, prompts, 1, zero)
    with torch.no_grad():
        logits = induction(prompts)
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 64), prompts[:, 1:].reshape(-1))
    assert ce.clean == pytest.approx(float(want), rel=1e-5)
    assert ce.spliced == pytest.approx(ce.zero_ablated, rel=1e-6) and ce.score == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("k", [None, 4])
def test_training_recovers_sparse_structure(k: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    dictionary = F.normalize(torch.randn(32, 16, generator=g), dim=1)
    codes = torch.rand(2000, 32, generator=g) * (torch.rand(2000, 32, generator=g) < 0.08)
    x = codes @ dictionary
    sae = train_sae(x, n_features=64, k=k, l1=0.2, steps=600, lr=3e-3, seed=0)
    m = sae_metrics(sae, x)
    assert m["explained_variance"] > 0.8, m
    assert m["l0"] < 10, m  # sparser than the 16 dimensions
    if k is not None:
        assert m["l0"] <= k
    assert all(p.grad is None for p in sae.parameters())


def test_feature_attribution_sums_to_the_metric_change_on_a_linear_network() -> None:
    model = Toy(linear=True, d=8, vocab=20).eval()
    ids = torch.tensor([[3, 5, 7, 1, 2]])
    sae = identity_sae(8)
    fa = feature_attribution(model, ids, 1, sae, target=4, foil=6)
    parts = find_parts(model)
    logits, _ = capture(model, parts, ids, sites=(), edits=(("resid", 1, torch.zeros_like),))
    zero = float(logits[0, -1, 4] - logits[0, -1, 6])
    # downstream of layer 1 the metric is linear: sum of activation x gradient = m(x) - m(0)
    assert abs(fa.metric - zero) > 0.1
    assert fa.values.sum() == pytest.approx(fa.metric - zero, rel=1e-4, abs=1e-5)
    with torch.no_grad():
        assert fa.metric == pytest.approx(float(model(ids)[0, -1, 4] - model(ids)[0, -1, 6]), abs=1e-5)
    assert len(fa.top(3)) == 3 and {"feature", "attribution"} <= set(fa.to_pandas())
    assert all(p.requires_grad for p in sae.parameters())


def test_bad_inputs(induction: InductionTransformer) -> None:
    with pytest.raises(LayerNotFoundError, match="layer=2 is out of range: this model has 2 decoder layers"):
        layer_activations(induction, repeated_tokens(1, 4), 2)
    with pytest.raises(InputError, match="activations must be shaped"):
        train_sae(torch.zeros(1, 4), n_features=8)
    with pytest.raises(OptionError, match="k=9 must be between 1 and n_features=8"):
        SparseAutoencoder(4, 8, k=9)
    with pytest.raises(InputError, match="no prompts"):
        layer_activations(induction, [], 0)
