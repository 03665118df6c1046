"""Integrated Gradients: closed forms, completeness gap, Captum agreement, baselines, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _gradient_nets import small_resnet
from captum.attr import IntegratedGradients as CIG
from captum.attr import LayerIntegratedGradients, NeuronIntegratedGradients
from torch import nn

from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot
from unveil.attribution.gradient import InputXGradient
from unveil.attribution.path import IntegratedGradients, Rule
from unveil.core.baselines import blur
from unveil.errors import BaselineError, OptionError

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


@pytest.fixture(scope="module")
def zoo() -> tuple[nn.Module, torch.Tensor]:
    from unveil.zoo import digits_cnn, load_dataset

    return digits_cnn(), load_dataset("digits_cnn").X_test[:6]


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    return small_resnet(), torch.randn(4, 3, 12, 12)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


# ---------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_trapezoid"])
def test_linear_model_is_exact(rule: Rule) -> None:
    lin = nn.Linear(5, 3).eval()
    x, b = torch.randn(4, 5), torch.randn(4, 5)
    e = IntegratedGradients(lin, n_steps=3, rule=rule)(x, target=1, baseline=b)
    torch.testing.assert_close(_t(e.values), (x - b) * lin.weight[1].detach())
    assert e.delta is not None
    assert np.abs(e.delta).max() < 1e-5
    ixg = InputXGradient(lin)(x, target=1)
    ig0 = IntegratedGradients(lin, n_steps=2)(x, target=1)
    np.testing.assert_allclose(ig0.values, ixg.values, rtol=1e-5, atol=1e-7)


def test_gap_shrinks_with_steps(zoo: tuple[nn.Module, torch.Tensor]) -> None:
    net, x = zoo[0], zoo[1][:3]
    deltas = [IntegratedGradients(net, n_steps=s, rule="riemann_right")(x, target=2).delta
              for s in (4, 16, 64)]
    gaps = [np.abs(d).mean() for d in deltas if d is not None]
    assert gaps[0] > 1e-2  # non-trivial: few steps leave a clear gap
    assert gaps[0] > gaps[1] > gaps[2]


def test_auto_steps_meet_tolerance(zoo: tuple[nn.Module, torch.Tensor]) -> None:
    net, x = zoo[0], zoo[1][:3]
    e = IntegratedGradients(net, n_steps="auto", tol=0.01)(x, target=2)
    gap = e.outputs - e.baseline_outputs
    assert e.delta is not None
    assert np.all(np.abs(e.delta) <= 0.01 * np.abs(gap) + 1e-4)
    steps = e.extras["n_steps"]
    assert steps.min() >= 16 and steps.max() <= 512 and steps.max() > 16
    fixed = IntegratedGradients(net, n_steps=int(steps[0]))(x[:1], target=2)
    np.testing.assert_allclose(e.values[:1], fixed.values, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- Captum
@pytest.mark.parametrize("which", ["zoo", "resnet"])
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_trapezoid"])
def test_agree_with_captum(which: str, rule: Rule, request: pytest.FixtureRequest) -> None:
    net, x = request.getfixturevalue(which)
    b = 0.3 * torch.rand_like(x)
    e = IntegratedGradients(net, n_steps=16, rule=rule)(x, target=1, baseline=b)
    ref, delta = CIG(net).attribute(x, baselines=b, target=1, n_steps=16, method=rule,
                                    return_convergence_delta=True)
    assert ref.abs().max() > 1e-3
    if rule == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n (halved at the ends) on n points spaced 1/(n-1):
        # they sum to (n-1)/n, not 1. Ours are the trapezoid rule's 1/(n-1); rescale to compare.
        ref, delta = ref * 16 / 15, None
    torch.testing.assert_close(_t(e.values), ref.detach(), rtol=1e-4, atol=1e-6)
    if delta is not None:
        assert e.delta is not None
        np.testing.assert_allclose(e.delta, delta.detach().numpy(), atol=1e-4)


def test_layer_and_neuron_ig_agree_with_captum(zoo: tuple[nn.Module, torch.Tensor]) -> None:
    net, x = zoo
    b = 0.2 * torch.ones_like(x)
    e = IntegratedGradients(net, n_steps=16)(x, target=4, layer="features.3", baseline=b)
    ref = LayerIntegratedGradients(net, net.features[3]).attribute(
        x, baselines=b, target=4, n_steps=16).detach()
    assert ref.abs().max() > 1e-3 and e.values.shape == tuple(ref.shape)
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-4, atol=1e-6)
    assert e.delta is not None and e.outputs is not None and e.baseline_outputs is not None
    assert np.abs(e.delta).max() < 0.05 * np.abs(e.outputs - e.baseline_outputs).max()
    e = IntegratedGradients(net, n_steps=16)(x, neuron=("features.3", (2, 3, 3)))
    ref = NeuronIntegratedGradients(net, net.features[3]).attribute(x, (2, 3, 3), n_steps=16)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(_t(e.values), ref.detach(), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- baselines
def test_background_is_the_mean_over_baselines() -> None:
    net = mlp().eval()
    x, bg = torch.randn(3, 6), torch.randn(4, 6)
    ig = IntegratedGradients(net, n_steps=8)
    e = ig(x, target=0, background=bg)
    singles = [ig(x, target=0, baseline=bg[m:m + 1]) for m in range(4)]
    np.testing.assert_allclose(e.values, np.mean([s.values for s in singles], 0), atol=1e-6)
    assert e.baseline_outputs is not None
    np.testing.assert_allclose(e.baseline_outputs,
                               np.mean([np.asarray(s.baseline_outputs) for s in singles], 0),
                               atol=1e-6)
    assert e.params["baseline"] == "background(4)"


def test_named_baselines() -> None:
    net = TinyCNN().eval()
    x = torch.rand(3, 1, 16, 16)
    ig = IntegratedGradients(net, n_steps=4)
    np.testing.assert_allclose(ig(x, target=0, baseline="blur").values,
                               ig(x, target=0, baseline=blur(x)).values, atol=1e-7)
    u1 = ig(x, target=0, baseline="uniform", seed=3)
    u2 = ig(x, target=0, baseline="uniform", seed=3)
    np.testing.assert_array_equal(u1.values, u2.values)
    assert u1.seed == 3
    with torch.no_grad():
        f_half = net(torch.full_like(x, 0.5))[:, 0]
    half = ig(x, target=0, baseline=0.5).baseline_outputs
    assert half is not None
    np.testing.assert_allclose(half, f_half, atol=1e-6)


def test_batch_size_invariance() -> None:
    net = TinyCNN().eval()
    x = torch.rand(5, 1, 16, 16)
    a = IntegratedGradients(net, n_steps=8, batch_size=3)(x, target=1)
    b = IntegratedGradients(net, n_steps=8)(x, target=1)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-8)
    assert a.n_evals == b.n_evals


# ---------------------------------------------------------------------------- errors
def test_bad_options_and_baselines() -> None:
    net = mlp().eval()
    x = torch.randn(2, 6)
    with pytest.raises(OptionError, match="option n_steps=0 is outside >= 1"):
        IntegratedGradients(net, n_steps=0)
    with pytest.raises(OptionError, match=r"rule='simpson' should be 'gausslegendre' \| 'riemann_left'"):
        IntegratedGradients(net, rule="simpson")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=">= 2 for the trapezoid rule"):  # semantic, kept
        IntegratedGradients(net, n_steps=1, rule="riemann_trapezoid")
    with pytest.raises(OptionError, match="tol > 0"):
        IntegratedGradients(net, n_steps="auto", tol=0)
    with pytest.raises(BaselineError, match="cannot be broadcast"):
        IntegratedGradients(net)(x, baseline=torch.zeros(3, 5))
    with pytest.raises(OptionError, match="not both"):
        IntegratedGradients(net)(x, baseline="blur", background=torch.zeros(3, 6))
    with pytest.raises(BaselineError, match="background rows have shape"):
        IntegratedGradients(net)(x, background=torch.zeros(3, 5))


@pytest.mark.parametrize("train", [False, True])
def test_model_unchanged(train: bool) -> None:
    net = TinyCNN()
    net.train(train)
    snap = snapshot(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        IntegratedGradients(net, n_steps=3)(torch.rand(2, 1, 16, 16), layer="features.3")
    assert_unchanged(net, snap)
    net.head = Raises()
    snap = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        IntegratedGradients(net, n_steps=3)(torch.rand(2, 1, 16, 16), target=0)
    assert_unchanged(net, snap)
