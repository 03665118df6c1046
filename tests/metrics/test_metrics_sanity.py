"""Sanity checks (model-parameter randomisation, random logit) and the similarity measures."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
import torch
from _mutil import digits, linear, make_exp
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, snapshot, training_warning
from unveil.errors import LayerNotFoundError, ModelError, OptionError
from unveil.metrics import random_logit, randomizable_layers, sanity_check
from unveil.metrics.similarity import (
    hog_features,
    hog_similarity,
    spearman,
    ssim,
    top_k_intersection,
)


def test_gradient_similarity_drops_as_more_layers_are_randomised() -> None:
    model, xs, _ = digits()
    snap = snapshot(model)
    res = sanity_check(model, xs[:16], method="saliency", seed=0)
    assert_unchanged(model, snap)  # a copy was randomised
    assert res.layers == ["classifier.2", "features.6", "features.3", "features.0"]
    sims = [res.similarity[name]["spearman_abs"] for name in res.layers]
    assert sims[0] < 0.9  # the top layer alone already changes the gradient
    assert all(b <= a + 0.05 for a, b in zip(sims, sims[1:]))  # and it keeps falling
    assert sims[-1] < sims[0] - 0.2 and sims[-1] < 0.2
    assert res.passed and res.final == sims[-1] and res.threshold == 0.5
    assert set(res.similarity[res.layers[0]]) == {"spearman_abs", "spearman", "ssim", "hog"}
    assert res.per_sample[res.layers[-1]]["spearman_abs"].shape == (16,)
    assert res.random_logit["spearman_abs"] < 0.9
    again = sanity_check(model, xs[:16], method="saliency", seed=0, random_logit=False)
    assert again.similarity == res.similarity  # seeded


def test_guided_backprop_fails_as_adebayo_et_al_found() -> None:
    """Guided backprop stays close to the original while the upper layers are random, and only
    changes once the first convolutions are (Adebayo et al., 2018, Fig. 2); the gradient does
    not. Judged on the full randomisation alone, guided backprop would pass."""
    model, xs, _ = digits()
    gbp = sanity_check(model, xs[:16], method="guided_backprop", seed=0, random_logit=False)
    grad = sanity_check(model, xs[:16], method="saliency", seed=0, random_logit=False)
    assert gbp.layers == grad.layers and len(gbp.layers) == 4
    half = gbp.layers[1]  # the top two of four layers randomised
    assert gbp.upper == gbp.similarity[half]["spearman_abs"] and grad.upper == grad.similarity[half]["spearman_abs"]
    assert gbp.upper > grad.upper + 0.2
    assert gbp.final < gbp.threshold  # the old rule alone would have passed it
    assert not gbp.passed and grad.passed
    assert "FAILS" in str(gbp) and "the top 2" in str(gbp)


def test_a_map_that_ignores_the_model_fails() -> None:
    model, xs, _ = digits()

    def edges(_module: nn.Module, x: torch.Tensor, _t: torch.Tensor | None) -> torch.Tensor:
        return (x - torch.roll(x, 1, dims=-1)).abs()  # an edge detector: no model inside

    res = sanity_check(model, xs[:8], explain_fn=edges, method="edges", mode="both")
    assert not res.passed
    for table in (res.similarity, res.independent):
        for sims in table.values():
            assert sims["spearman_abs"] == pytest.approx(1.0)
            assert sims["ssim"] == pytest.approx(1.0)
    assert res.random_logit["spearman_abs"] == pytest.approx(1.0)
    assert "FAILS" in str(res)


def test_independent_randomisation_restores_each_layer() -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.rand(6, 1, 16, 16)
    res = sanity_check(net, x, method="saliency", mode="both", measures=["spearman_abs"])
    assert list(res.independent) == res.layers
    top = res.layers[0]
    # the first step randomises the same single layer in both modes
    assert res.independent[top] == pytest.approx(res.similarity[top])
    # afterwards independent keeps every other layer trained: more similar than cascading
    assert res.independent[res.layers[-1]]["spearman_abs"] > res.similarity[res.layers[-1]]["spearman_abs"]
    only = sanity_check(net, x, method="saliency", layers=["features.3", "head.1"])
    assert only.layers == ["head.1", "features.3"]  # top down whatever order they were given in


def test_random_logit_metric() -> None:
    model, xs, _ = digits()
    exp = uv.explain(model, xs[:8], method="saliency")
    res = random_logit(model, exp)
    assert 0 < res.value < 0.9 and res.higher_is_better is False
    same = random_logit(model, exp, explain_fn=lambda x, t: torch.as_tensor(exp.values))
    np.testing.assert_allclose(same.per_sample, 1.0)


def test_errors() -> None:
    net = TinyCNN().eval()
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ModelError, match="torch.nn.Module"):
        sanity_check(lambda a: a.flatten(1)[:, :3], x)
    with pytest.raises(LayerNotFoundError, match="cannot randomise"):
        sanity_check(net, x, layers=["features.9"])
    with pytest.raises(OptionError, match="mode must be"):
        sanity_check(net, x, mode="all")  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(OptionError, match="unknown similarity"):
        sanity_check(net, x, measures=["pearson"])
    with pytest.raises(OptionError, match="compares images"):
        sanity_check(linear(6, 3), torch.randn(3, 6), measures=["ssim"])
    with pytest.raises(OptionError, match="takes no"):
        sanity_check(net, x, method="saliency", n_steps=3)
    one = nn.Sequential(nn.Linear(6, 1), nn.Flatten(0)).eval()
    exp = make_exp(np.ones((3, 6)), torch.randn(3, 6), None)
    with pytest.raises(ModelError, match="several class scores"):
        random_logit(one, exp)
    assert randomizable_layers(net) == ["features.0", "features.3", "head.1"]


@pytest.mark.parametrize("train", [False, True])
def test_user_model_left_unchanged(train: bool) -> None:
    torch.manual_seed(0)
    net = TinyCNN().train(train)
    x = torch.rand(3, 1, 16, 16)
    snap = snapshot(net)
    with training_warning(train):
        sanity_check(net, x, mode="both", measures=["spearman_abs"])
    assert_unchanged(net, snap)
    broken = nn.Sequential(net, Raises()).train(train)
    snap = snapshot(broken)
    with training_warning(train), pytest.raises(RuntimeError, match="boom"):
        sanity_check(broken, x)
    assert_unchanged(broken, snap)


# ------------------------------------------------------------------ similarity measures
def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 1, 32, 32, generator=g)
    b = a + 0.7 * torch.randn(5, 1, 32, 32, generator=g)
    a[0, 0, :10] = 0.0  # ties
    b[0, 0, :5] = 0.0
    return a, b


def _unit(t: torch.Tensor) -> np.ndarray:
    m = t.abs().sum(0).double().numpy()
    return (m - m.min()) / (m.max() - m.min())


def test_spearman_matches_scipy_with_ties() -> None:
    a, b = _maps()
    for absolute in (False, True):
        got = spearman(a, b, absolute=absolute).numpy()
        f = np.abs if absolute else (lambda v: v)
        ref = [st.spearmanr(f(a[i].flatten().numpy()), f(b[i].flatten().numpy()))[0] for i in range(5)]
        np.testing.assert_allclose(got, ref, atol=1e-12)
    assert np.isnan(spearman(torch.ones(1, 4), torch.arange(4.0).view(1, 4)).item())


def test_ssim_matches_skimage() -> None:
    a, b = _maps()
    ref = [structural_similarity(_unit(a[i]), _unit(b[i]), data_range=1.0) for i in range(5)]
    np.testing.assert_allclose(ssim(a, b).numpy(), ref, atol=1e-10)
    assert 0.2 < min(ref) < max(ref) < 0.9


def test_hog_matches_skimage() -> None:
    a, _ = _maps()
    maps = torch.stack([torch.tensor(_unit(a[i])) for i in range(5)])
    ref = np.stack([hog(m.numpy(), pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for m in maps])
    np.testing.assert_allclose(hog_features(maps).numpy(), ref, atol=1e-6)
    ref3 = np.stack([hog(m.numpy(), orientations=6, pixels_per_cell=(4, 4), cells_per_block=(3, 3))
                     for m in maps])
    got3 = hog_features(maps, orientations=6, pixels_per_cell=4, cells_per_block=3)
    np.testing.assert_allclose(got3.numpy(), ref3, atol=1e-6)
    np.testing.assert_allclose(hog_similarity(a, a).numpy(), 1.0)


def test_top_k_intersection() -> None:
    a = torch.tensor([[5.0, 4, 3, 2, 1, 0]])
    b = torch.tensor([[0.0, 4, 3, 2, 1, 5]])
    assert top_k_intersection(a, b, 2).item() == 0.5  # {0, 1} vs {5, 1}
    assert top_k_intersection(a, -a, 3, absolute=False).item() == 0.0
    assert top_k_intersection(a, a, 0.5).item() == 1.0
    with pytest.raises(OptionError, match="k must select"):
        top_k_intersection(a, b, 7)
