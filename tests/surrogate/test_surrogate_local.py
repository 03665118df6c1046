"""Local surrogates: closed forms (linear models, gradients of smooth models), held-out fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unveil.surrogate as us
from _util import Raises, assert_unchanged, mlp, snapshot, training_warning
from unveil.errors import InputError, ModelError, OptionError, TargetError


def test_linear_model_weights_are_recovered_exactly():
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    f = lambda x: x @ w + 3.0  # noqa: E731
    X = torch.randn(200, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 5.0, 0.1, 2.0])
    x = X[3]
    loc = us.local_surrogate(f, x, X=X, target=None)
    assert loc.fidelity > 0.9999
    assert np.allclose(list(loc.weights.values()), w.numpy(), atol=1e-3)
    assert loc.intercept == pytest.approx(float(f(x[None])[0]), abs=1e-3)
    assert loc.model_score == pytest.approx(float(f(x[None])[0]), abs=1e-5)
    # weights are in the columns' own units, the scale follows the columns' spread
    assert loc.scale[1] > 10 * loc.scale[2]


def test_small_neighbourhood_gives_the_gradient():
    x0 = np.array([0.5, -1.0, 2.0])
    f = lambda x: (x**2).sum(1) + torch.sin(x[:, 0])  # noqa: E731
    loc = us.local_surrogate(f, x0, target=None, scale=1e-3, n_samples=500)
    grad = 2 * x0 + np.array([np.cos(0.5), 0.0, 0.0])
    assert np.allclose(list(loc.weights.values()), grad, rtol=1e-2)
    assert loc.fidelity > 0.99
    wide = us.local_surrogate(f, x0, target=None, scale=2.0, n_samples=500)
    assert wide.fidelity < loc.fidelity  # a quadratic is not linear on a wide neighbourhood


def test_tree_local_surrogate_finds_the_step():
    f = lambda x: torch.where(x[:, 1] > 0.2, 5.0, 0.0)  # noqa: E731
    loc = us.local_surrogate(f, np.zeros(3), target=None, kind="tree", max_depth=1, n_samples=1000)
    assert loc.rules is not None
    (r1, r2) = loc.rules
    assert {c.feature for c in r1.conditions} == {1}
    assert r1.conditions[0].threshold == pytest.approx(0.2, abs=0.05)
    assert loc.fidelity > 0.95
    assert r1.coverage + r2.coverage == pytest.approx(1.0)


def test_target_and_feature_names_and_determinism():
    net = mlp(4, 3).eval()
    x = torch.randn(4)
    a = us.local_surrogate(net, x, feature_names=list("abcd"), seed=1)
    b = us.local_surrogate(net, x, feature_names=list("abcd"), seed=1, batch_size=13)
    assert a.target == int(net(x[None]).argmax())
    assert a.weights is not None and b.weights is not None and list(a.weights) == list("abcd")
    assert np.allclose(list(a.weights.values()), list(b.weights.values()), atol=1e-6)
    c = us.local_surrogate(net, x, target=0)
    assert c.model_score == pytest.approx(float(net(x[None])[0, 0].detach()), abs=1e-5)
    assert "local linear surrogate" in str(a) and a.to_dict()["target"] == a.target


def test_errors():
    net = mlp(4, 3).eval()
    with pytest.raises(InputError, match="one instance"):
        us.local_surrogate(net, torch.randn(2, 4))
    with pytest.raises(OptionError, match="n_samples must be at least 20"):
        us.local_surrogate(net, torch.randn(4), n_samples=5)
    with pytest.raises(OptionError, match="kind must be"):
        us.local_surrogate(net, torch.randn(4), kind="forest")  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(TargetError, match="out of range"):
        us.local_surrogate(net, torch.randn(4), target=7)
    with pytest.raises(InputError, match="columns"):
        us.local_surrogate(net, torch.randn(4), X=torch.randn(10, 3))


@pytest.mark.parametrize("train", [False, True])
def test_model_left_unchanged(train):
    net = mlp(4, 3)
    net.train(train)
    before = snapshot(net)
    with training_warning(train):
        us.local_surrogate(net, torch.randn(4), n_samples=100)
    assert_unchanged(net, before)
    broken = nn.Sequential(nn.Linear(4, 4), Raises())
    broken.train(train)
    before = snapshot(broken)
    with training_warning(train), pytest.raises((RuntimeError, ModelError), match="boom"):
        us.local_surrogate(broken, torch.randn(4), n_samples=100)
    assert_unchanged(broken, before)
