"""Robustness metrics: max/avg sensitivity and the local Lipschitz estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _mutil import linear, make_exp
from torch import nn

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, snapshot, training_warning
from unveil.errors import InputError, OptionError
from unveil.metrics import avg_sensitivity, local_lipschitz, max_sensitivity
from unveil.metrics import robustness as rob


def test_sensitivity_zero_for_constant_explainer() -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.rand(4, 1, 16, 16)
    const = torch.randn(1, 1, 16, 16)
    exp = make_exp(const.expand(4, -1, -1, -1).numpy(), x, np.array([0, 1, 2, 3]), method="constant")

    def explain_fn(xs: torch.Tensor, _t: torch.Tensor | None) -> torch.Tensor:
        return const.expand(xs.shape[0], -1, -1, -1)

    for metric in (max_sensitivity, avg_sensitivity, local_lipschitz):
        res = metric(net, exp, explain_fn=explain_fn, n_samples=5)
        np.testing.assert_array_equal(res.per_sample, 0.0)


def test_sensitivity_zero_for_gradient_of_linear_model_through_registry() -> None:
    model = linear(8, 3)
    x = torch.randn(5, 8)
    exp = uv.explain(model, x, method="saliency", abs=False)
    assert max_sensitivity(model, exp, n_samples=6).value < 1e-6
    # IG of a linear model is x * w: its change under noise d is d * w, not zero
    ig = uv.explain(model, x, method="integrated_gradients", n_steps=2)
    assert max_sensitivity(model, ig, n_samples=6).value > 0.05


def test_scaled_identity_explainer_closed_forms() -> None:
    # phi(x) = 3x: the Lipschitz estimate is exactly 3; the sensitivity is ||d|| / ||x|| for the
    # largest draw, within [radius/sqrt(3) * sqrt(D) / ||x||, radius * sqrt(D) / ||x||]
    model = linear(20, 2)
    x = torch.randn(6, 20)
    exp = make_exp((3 * x).numpy(), x, np.zeros(6, dtype=int), method="identity")

    def fn(xs: torch.Tensor, _t: torch.Tensor | None) -> torch.Tensor:
        return 3 * xs

    lip = local_lipschitz(model, exp, explain_fn=fn, n_samples=8)
    np.testing.assert_allclose(lip.per_sample, 3.0, rtol=1e-5)
    r = 0.2
    sens = max_sensitivity(model, exp, explain_fn=fn, n_samples=30, radius=r).per_sample
    xn = x.norm(dim=1).numpy()
    assert np.all(sens <= r * np.sqrt(20) / xn + 1e-6)
    assert np.all(sens >= 0.8 * r * np.sqrt(20 / 3) / xn)  # the max of 30 draws is near the mean
    avg = avg_sensitivity(model, exp, explain_fn=fn, n_samples=30, radius=r).per_sample
    assert np.all(avg <= sens + 1e-12) and np.all(avg > 0)
    raw = max_sensitivity(model, exp, explain_fn=fn, n_samples=30, radius=r, normalize=False)
    np.testing.assert_allclose(raw.per_sample, sens * 3 * xn, rtol=1e-5)


def test_seeded_and_independent_of_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.rand(3, 1, 16, 16)
    exp = uv.explain(net, x, method="saliency")
    a = max_sensitivity(net, exp, n_samples=6, seed=5).per_sample
    monkeypatch.setattr(rob, "_MAX_ROWS_BYTES", 1)  # one draw per re-explanation call
    b = max_sensitivity(net, exp, n_samples=6, seed=5).per_sample
    np.testing.assert_allclose(a, b, rtol=1e-5)
    c = max_sensitivity(net, exp, n_samples=6, seed=6).per_sample
    assert not np.allclose(a, c)
    assert a.min() > 0


def test_stored_options_are_reused_and_tensor_baselines_asked_for() -> None:
    model = linear(8, 3)
    x = torch.randn(4, 8)
    base = torch.randn(1, 8)
    exp = uv.explain(model, x, method="integrated_gradients", baseline=base, n_steps=3)
    with pytest.raises(OptionError, match="explain_options"):
        max_sensitivity(model, exp, n_samples=2)
    got = max_sensitivity(model, exp, n_samples=4, explain_options={"baseline": base}).per_sample
    # IG of a linear model with baseline b is (x - b) * w: the change under d is d * w
    d = torch.stack([rob._draw(0, r, tuple(x.shape), "uniform", 0.2) for r in range(4)]).float()
    w = model[0].weight.detach()[torch.as_tensor(exp.targets)]
    ref = ((d * w).norm(dim=2) / ((x - base) * w).norm(dim=1)).max(0).values
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4)
    with pytest.raises(OptionError, match="takes no option"):
        max_sensitivity(model, exp, explain_options={"baseline": base, "n_step": 3})


def test_errors() -> None:
    model = linear(6, 3)
    x = torch.randn(4, 6)
    exp = uv.explain(model, x, method="saliency")
    with pytest.raises(OptionError, match="n_samples must be positive"):
        max_sensitivity(model, exp, n_samples=0)
    emb = nn.Sequential(nn.Embedding(10, 2), nn.Flatten(), nn.Linear(8, 2)).eval()
    ids = torch.randint(0, 10, (3, 4))
    text = make_exp(np.ones((3, 4)), ids, np.zeros(3, dtype=int), method="saliency")
    with pytest.raises(InputError, match="integers"):
        local_lipschitz(emb, text, explain_fn=lambda a, b: a.float())


@pytest.mark.parametrize("train", [False, True])
def test_model_left_unchanged(train: bool) -> None:
    torch.manual_seed(0)
    net = TinyCNN().train(train)
    x = torch.rand(2, 1, 16, 16)
    with training_warning(train):
        exp = uv.explain(net, x, method="saliency")
    snap = snapshot(net)
    max_sensitivity(net, exp, n_samples=3)  # one warning per model: said above
    assert_unchanged(net, snap)
    broken = nn.Sequential(net, Raises()).train(train)
    snap = snapshot(broken)
    with training_warning(train), pytest.raises(RuntimeError, match="boom"):
        max_sensitivity(broken, exp, n_samples=2)
    assert_unchanged(broken, snap)
