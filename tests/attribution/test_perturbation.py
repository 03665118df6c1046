"""Occlusion, FeatureAblation and RISE: Captum agreement, closed forms, errors, model state."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot
from unveil.attribution.perturbation import RISE, FeatureAblation, Occlusion
from unveil.core.groups import FeatureGroups, column_groups, patches, tokens
from unveil.errors import InputError, OptionError

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return TinyCNN(3, 4).eval(), torch.randn(3, 3, 16, 16)


@pytest.mark.parametrize("window,stride", [((3, 5, 5), (3, 3, 3)), ((1, 4, 4), (1, 4, 4)), ((3, 16, 2), (3, 1, 2))])
def test_occlusion_equals_captum(cnn, window, stride):
    net, x = cnn
    ours = Occlusion(net, window=window, stride=stride)(x, target=1, baseline=0.3)
    ref = captum_attr.Occlusion(net).attribute(x, sliding_window_shapes=window, strides=stride,
                                               target=1, baselines=0.3)
    assert np.abs(ref.numpy()).max() > 1e-3
    np.testing.assert_allclose(ours.values, ref.numpy(), atol=1e-6)
    counts = [np.ceil((n - w) / s) + 1 for n, w, s in zip(x.shape[1:], window, stride)]
    assert ours.n_evals == 3 + 3 * int(np.prod(counts))
    assert ours.extras["window_values"].shape == (3, *(int(c) for c in counts))


def test_occlusion_defaults_and_tables():
    torch.manual_seed(0)
    lin = nn.Linear(6, 1)
    model = nn.Sequential(lin, nn.Flatten(0)).eval()
    x = torch.randn(4, 6)
    e = Occlusion(model)(x, target=None, baseline=0.5)
    np.testing.assert_allclose(e.values, (lin.weight[0] * (x - 0.5)).detach().numpy(), atol=1e-5)
    ref = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(2,), strides=(1,), baselines=0.5)
    np.testing.assert_allclose(Occlusion(model, window=2, stride=1)(x, target=None, baseline=0.5).values,
                               ref.numpy(), atol=1e-5)
    assert e.params["window"] == [1] and e.params["stride"] == [1]


def test_occlusion_background_is_mean_over_rows(cnn):
    net, x = cnn
    bg = torch.randn(5, 3, 16, 16)
    e = Occlusion(net, window=8, stride=8)(x[:1], target=2, background=bg)
    per_row = [Occlusion(net, window=8, stride=8)(x[:1], target=2, baseline=b[None]).values for b in bg]
    np.testing.assert_allclose(e.values, np.mean(per_row, axis=0), atol=1e-5)
    assert e.params["value_function"] == "interventional"


@pytest.mark.parametrize("mask", ["patches", "per_sample"])
def test_feature_ablation_equals_captum(cnn, mask):
    net, x = cnn
    if mask == "patches":
        grp = patches((3, 16, 16), 4)
        fm = grp.labels
    else:
        g = torch.Generator().manual_seed(0)
        lab = torch.randint(0, 5, (3, 1, 16, 16), generator=g).expand(3, 3, 16, 16).clone()
        lab[2][lab[2] == 4] = 3  # group 4 absent from the last image
        grp = FeatureGroups(5, [f"g{i}" for i in range(5)], "custom", labels=lab)
        fm = lab
    base = torch.rand(1, 3, 16, 16)
    ours = FeatureAblation(net)(x, target=3, groups=grp, baseline=base)
    ref = captum_attr.FeatureAblation(net).attribute(x, target=3, feature_mask=fm, baselines=base)
    assert np.abs(ref.numpy()).max() > 1e-3
    np.testing.assert_allclose(ours.values, ref.numpy(), atol=1e-6)
    if mask == "per_sample":
        assert ours.extras["group_values"][2, 4] == 0
        assert ours.n_evals == 3 + 5 + 5 + 4  # absent groups cost nothing


def test_feature_ablation_tables_closed_form_and_numpy_model():
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    bg = rng.normal(size=(20, 5)).astype(np.float32)
    e = FeatureAblation(lambda a: a @ w)(x, target=None, background=bg)
    np.testing.assert_allclose(e.values, w * (x - bg.mean(0)), atol=1e-5)
    grp = column_groups({"first two": [0, 1]}, 5)
    e = uv.explain(lambda a: a @ w, x, method="feature_ablation", target=None, groups=grp,
                   baseline=0.0)
    np.testing.assert_allclose(e.extras["group_values"][:, 0], x[:, :2] @ w[:2], atol=1e-5)
    np.testing.assert_allclose(e.values[:, 1], x[:, :2] @ w[:2], atol=1e-5)
    ref = captum_attr.FeatureAblation(lambda t: t @ torch.tensor(w, dtype=torch.float32)).attribute(
        torch.tensor(x), feature_mask=grp.labels)
    np.testing.assert_allclose(e.values, ref.numpy(), atol=1e-5)


def test_token_masking():
    torch.manual_seed(0)
    emb = nn.Embedding(20, 4)
    model = nn.Sequential(emb, nn.Flatten(), nn.Linear(4 * 5, 2)).eval()
    ids = torch.randint(2, 20, (2, 5))
    ids[0, 0] = 1  # a special token: never masked
    grp = tokens(ids, special_ids=[1])
    e = FeatureAblation(model)(ids, target=0, groups=grp, mask_id=0)
    for i in range(2):
        for t in range(5):
            masked = ids[i:i + 1].clone()
            masked[0, t] = 0
            drop = (model(ids[i:i + 1])[0, 0] - model(masked)[0, 0]).item()
            assert e.values[i, t] == pytest.approx(0.0 if (i, t) == (0, 0) else drop, abs=1e-5)
    o = Occlusion(model)(ids, target=0, mask_id=0)  # windows of one token
    assert o.values[1] == pytest.approx(e.values[1], abs=1e-5)


# ----------------------------------------------------------------------------- RISE
class _Const(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], device=x.device) + 0 * x.sum((1, 2, 3))


class _Pixel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 10, 5]


def test_rise_constant_model_gives_one():
    # E[M] = keep_prob everywhere, so the map of a constant score 1 is 1
    x = torch.rand(2, 3, 24, 24)
    e = RISE(_Const().eval(), n_samples=400, grid=6, keep_prob=0.3)(x, target=None, seed=0)
    z = (e.values - 1) / e.stderr
    assert e.stderr.min() > 0
    assert np.mean(np.abs(z) < 3) > 0.97
    assert np.abs(e.values - 1).max() < 0.3


def test_rise_peaks_at_the_used_pixel_and_is_seeded():
    x = torch.ones(1, 1, 16, 16)
    e = RISE(_Pixel().eval(), n_samples=1500, grid=4)(x, target=None, seed=3)
    peak = np.unravel_index(np.argmax(e.values[0, 0]), (16, 16))
    assert abs(peak[0] - 10) <= 2 and abs(peak[1] - 5) <= 2
    again = RISE(_Pixel().eval(), n_samples=1500, grid=4, batch_size=13)(x, target=None, seed=3)
    np.testing.assert_allclose(e.values, again.values, atol=1e-6)
    other = RISE(_Pixel().eval(), n_samples=1500, grid=4)(x, target=None, seed=4)
    assert not np.allclose(e.values, other.values)
    assert e.n_evals == 1 + 1500


def test_rise_two_seeds_agree_within_stderr(cnn):
    net, x = cnn
    a = RISE(net, n_samples=300)(x[:1], target=0, seed=1)
    b = RISE(net, n_samples=300)(x[:1], target=0, seed=2)
    z = (a.values - b.values) / np.sqrt(a.stderr**2 + b.stderr**2)
    assert 0.9 < np.mean(np.abs(z) < 3)


# ----------------------------------------------------------------------------- errors, state
def test_bad_inputs(cnn):
    net, x = cnn
    with pytest.raises(OptionError, match="larger than the input"):
        Occlusion(net, window=32)(x, target=0)
    with pytest.raises(OptionError, match="stride .* is larger than the window"):
        Occlusion(net, window=4, stride=6)(x, target=0)
    with pytest.raises(OptionError, match="window must be a positive int"):
        Occlusion(net, window=(1, 2, 3, 4))(x, target=0)
    with pytest.raises(OptionError, match=r"groups='patches' should be FeatureGroups \| None"):
        FeatureAblation(net)(x, target=0, groups="patches")
    with pytest.raises(InputError, match="RISE explains images"):
        RISE(mlp().eval())(torch.randn(2, 6), target=0)
    with pytest.raises(OptionError, match=r"keep_prob=1.5 is outside \[0, 1\]"):
        RISE(net, keep_prob=1.5)
    with pytest.raises(OptionError, match="keep_prob must be strictly between 0 and 1"):
        RISE(net, keep_prob=1.0)
    with pytest.raises(OptionError, match="option grid=0 is outside >= 1"):
        RISE(net, grid=0)
    with pytest.raises(OptionError, match="option n_samples=1 is outside >= 2"):
        RISE(net, n_samples=1)


@pytest.mark.parametrize("make", [
    lambda m: Occlusion(m, window=4), lambda m: FeatureAblation(m), lambda m: RISE(m, n_samples=20),
])
@pytest.mark.parametrize("train", [False, True])
def test_model_unchanged(make, train):
    net = TinyCNN(1, 3)
    net.train(train)
    before = snapshot(net)
    x = torch.randn(2, 1, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        make(net)(x, target=0, seed=0)
    assert_unchanged(net, before)
    bad = nn.Sequential(nn.Conv2d(1, 1, 3), Raises())
    bad.train(train)
    before = snapshot(bad)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        make(bad)(x, target=None, seed=0)
    assert_unchanged(bad, before)


def test_registered():
    info = {m.name: m for m in uv.methods()}
    assert {"occlusion", "feature_ablation", "rise"} <= set(info)
    assert info["rise"].modalities == ("image",) and info["rise"].stochastic
    assert not any(info[n].needs_gradients for n in ("occlusion", "feature_ablation", "rise"))


@pytest.mark.parametrize("baseline", [None, "row"])
@pytest.mark.parametrize("table", [True, False])
def test_occlusion_equals_captum_image_windows(cnn, baseline, table, monkeypatch):
    """The benchmark's configuration (windows spanning the channels, stride half the window) with
    a zero baseline (the game's x * keep path) or a baseline per row, with the window masks built
    once per call or per chunk: the same values as Captum's Occlusion."""
    from unveil.attribution import perturbation

    if not table:
        monkeypatch.setattr(perturbation, "_TABLE_LIMIT", 0)
    net, x = cnn
    b = None if baseline is None else torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    ours = Occlusion(net, window=8, stride=4, batch_size=5)(x, target=2, baseline=b)
    ref = captum_attr.Occlusion(net).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4),
                                               target=2, baselines=0 if b is None else b)
    assert np.abs(ref.numpy()).max() > 1e-3
    np.testing.assert_allclose(ours.values, ref.numpy(), atol=1e-6)
    assert ours.n_evals == 3 + 3 * 9
