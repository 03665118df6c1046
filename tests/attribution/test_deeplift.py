"""DeepLIFT (Rescale) and DeepLIFT-SHAP: completeness in float64, a hand-built matrix reference,
Captum agreement, in-place/reused/functional activations, unsupported models, errors, hygiene."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _gradient_nets import captum_safe_copy, relu_variants, small_resnet
from captum.attr import DeepLift as CDeepLift
from captum.attr import DeepLiftShap as CDeepLiftShap
from captum.attr import LayerDeepLift
from torch import nn

from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot
from unveil.attribution.deeplift import DeepLift, DeepLiftShap
from unveil.core.model import Model
from unveil.errors import BaselineError, ModelError, OptionError

pytestmark = [pytest.mark.filterwarnings("ignore:Setting forward, backward hooks"),
              pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")]


@pytest.fixture(scope="module")
def zoo() -> tuple[nn.Module, torch.Tensor]:
    from unveil.zoo import digits_cnn, load_dataset

    return digits_cnn(), load_dataset("digits_cnn").X_test[:6]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _relu_mlp_reference(net: nn.Sequential, x: torch.Tensor, b: torch.Tensor, t: int) -> torch.Tensor:
    """DeepLIFT-Rescale of a Linear-ReLU-Linear-ReLU-Linear net written out in matrix form."""
    W1, b1, W2, b2, W3 = (net[0].weight, net[0].bias, net[2].weight, net[2].bias, net[4].weight)

    def slope(h: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        d = h - hr
        return torch.where(d.abs() < 1e-10, (h > 0).double(),
                           (h.relu() - hr.relu()) / torch.where(d.abs() < 1e-10, 1.0, d))

    h1, h1r = x @ W1.T + b1, b @ W1.T + b1
    h2, h2r = h1.relu() @ W2.T + b2, h1r.relu() @ W2.T + b2
    r1, r2 = slope(h1, h1r), slope(h2, h2r)
    m = ((W3[t] * r2) @ W2 * r1) @ W1  # row i: W1^T (r1_i * W2^T (r2_i * w3_t))
    return (x - b) * m


# ---------------------------------------------------------------------------- axioms, closed forms
def test_hand_built_reference_float64() -> None:
    net = mlp(n_in=5, n_out=3, hidden=8).double().eval()
    x, b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    e = DeepLift(net)(x, target=2, baseline=b)
    ref = _relu_mlp_reference(net, x, b, 2)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("which", ["mlp", "clean", "zoo", "resnet", "smooth_acts"])
def test_completeness_float64(which: str, zoo: Any) -> None:
    torch.manual_seed(0)
    if which == "mlp":
        net, x = mlp(), torch.randn(5, 6)
    elif which == "clean":
        net, x = relu_variants()["clean"], torch.randn(4, 1, 8, 8)
    elif which == "zoo":
        net, x = copy.deepcopy(zoo[0]), zoo[1]
    elif which == "resnet":
        net, x = small_resnet(), torch.randn(3, 3, 12, 12)
    else:
        net = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8),
                            nn.Sigmoid(), nn.Linear(8, 8), nn.ELU(), nn.Linear(8, 8), nn.SiLU(),
                            nn.Linear(8, 3))
        x = torch.randn(5, 6)
    net, x = net.double().eval(), x.double()
    e = DeepLift(net)(x, target=1, baseline=0.5 * torch.randn_like(x))
    gap = e.outputs - e.baseline_outputs
    assert np.abs(gap).max() > 1e-3  # non-trivial
    assert e.delta is not None
    assert np.abs(e.delta).max() < 1e-5 * np.abs(gap).max()
    np.testing.assert_allclose(e.values.reshape(len(x), -1).sum(1), gap, atol=1e-5)


def test_deeplift_shap_is_the_mean_over_background() -> None:
    net = mlp().double().eval()
    x, bg = torch.randn(3, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    e = DeepLiftShap(net)(x, target=0, background=bg)
    refs = [_relu_mlp_reference(net, x, bg[m].expand_as(x), 0) for m in range(4)]
    torch.testing.assert_close(_t(e.values), torch.stack(refs).mean(0), rtol=1e-10, atol=1e-12)
    assert e.delta is not None
    assert np.abs(e.delta).max() < 1e-10


# ---------------------------------------------------------------------------- Captum
def test_agree_with_captum_on_resnet() -> None:
    torch.manual_seed(2)
    net, x = small_resnet(), torch.randn(4, 3, 12, 12)
    b, bg = 0.3 * torch.randn_like(x), torch.randn(3, 3, 12, 12)
    ref = CDeepLift(net).attribute(x, baselines=b, target=3).detach()
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(_t(DeepLift(net)(x, target=3, baseline=b).values), ref,
                               rtol=1e-4, atol=1e-6)
    ref = CDeepLiftShap(net).attribute(x, baselines=bg, target=3).detach()
    torch.testing.assert_close(_t(DeepLiftShap(net)(x, target=3, background=bg).values), ref,
                               rtol=1e-4, atol=1e-6)
    ref = LayerDeepLift(net, net.layer1).attribute(x, baselines=b, target=3).detach()
    e = DeepLift(net)(x, target=3, baseline=b, layer="layer1")
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-4, atol=1e-6)


def test_agree_with_captum_on_zoo(zoo: Any) -> None:
    net, x = zoo
    b = torch.full_like(x, 0.1)
    e = DeepLift(net)(x, target=7, baseline=b)
    # Captum 0.9 is wrong where a ReLU module feeds a MaxPool module directly (as here):
    # its completeness gap is large. On a functionally identical copy with a no-op between the
    # two it is right, and agrees with us.
    _, cdelta = CDeepLift(net).attribute(x, baselines=b, target=7, return_convergence_delta=True)
    assert e.delta is not None
    assert cdelta.abs().max() > 100 * np.abs(e.delta).max()
    safe = captum_safe_copy(net)
    with torch.no_grad():
        torch.testing.assert_close(safe(x), net(x))
    ref, sdelta = CDeepLift(safe).attribute(x, baselines=b, target=7, return_convergence_delta=True)
    assert ref.abs().max() > 1e-3 and sdelta.abs().max() < 1e-3
    torch.testing.assert_close(_t(e.values), ref.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["inplace", "reused", "functional"])
def test_activation_variants_equal_clean_reference(variant: str) -> None:
    nets = relu_variants()
    x, b = torch.randn(4, 1, 8, 8), 0.3 * torch.randn(4, 1, 8, 8)
    clean = DeepLift(nets["clean"])(x, target=1, baseline=b).values
    captum_clean = CDeepLift(nets["clean"]).attribute(x, baselines=b, target=1).detach()
    torch.testing.assert_close(_t(clean), captum_clean, rtol=1e-4, atol=1e-6)
    e = DeepLift(nets[variant])(x, target=1, baseline=b)
    np.testing.assert_allclose(e.values, clean, rtol=1e-5, atol=1e-7)
    assert e.delta is not None
    assert np.abs(e.delta).max() < 1e-4


# ---------------------------------------------------------------------------- unsupported models
def test_softmax_warns_and_breaks_completeness() -> None:
    net = mlp().eval()
    x = torch.randn(3, 6)
    with pytest.warns(UserWarning, match="_softmax, which deeplift has no rule for"):
        e = DeepLift(Model(net, output="probs"))(x, target=0)
    assert e.values.shape == (3, 6)


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return F.relu(F.relu(h)) if bool(x.sum() > 0) else F.relu(h)


def _relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


with warnings.catch_warnings():  # torch.jit.script is deprecated but still what users have
    warnings.simplefilter("ignore")
    _scripted_relu = torch.jit.script(_relu)


class _CallsScript(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(_scripted_relu(self.a(x)))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripted_and_data_dependent_models_are_refused() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 4)
    with pytest.raises(ModelError, match="TorchScript"):  # batch_size=2: see report on the core
        DeepLift(torch.jit.script(net), batch_size=2)(x, target=0)
    with pytest.raises(ModelError, match="do not pass through Python"):
        DeepLift(_CallsScript().eval())(x, target=0)
    with pytest.raises(ModelError, match="different activations or poolings"):
        DeepLift(_Branchy().eval())(torch.ones(1, 4), target=0, baseline=-1.0)


def test_bad_options() -> None:
    net = mlp().eval()
    x = torch.randn(2, 6)
    with pytest.raises(BaselineError, match="pass background="):
        DeepLiftShap(net)(x)
    with pytest.raises(OptionError, match="'deeplift_shap' takes no option 'baseline'"):
        DeepLiftShap(net)(x, baseline="zeros", background=torch.zeros(3, 6))
    with pytest.raises(OptionError, match="option eps=-1.0 is outside >= 0"):
        DeepLift(net, eps=-1.0)
    with pytest.raises(BaselineError, match="cannot be broadcast"):
        DeepLift(net)(x, baseline=torch.zeros(5, 6))


@pytest.mark.parametrize("train", [False, True])
def test_model_unchanged(train: bool) -> None:
    net = relu_variants()["inplace"]
    net.train(train)
    snap = snapshot(net)
    x = torch.randn(2, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DeepLift(net)(x, target=0)
        DeepLiftShap(net)(x, target=0, background=torch.randn(3, 1, 8, 8), layer="conv2")
    assert_unchanged(net, snap)
    cnn = TinyCNN()
    cnn.train(train)
    cnn.head = Raises()
    snap = snapshot(cnn)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DeepLift(cnn)(torch.rand(2, 1, 16, 16), target=0)
    assert_unchanged(cnn, snap)
