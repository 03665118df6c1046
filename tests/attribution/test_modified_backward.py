"""Guided backprop and deconvnet: Captum agreement, a hand-built float64 reference, the ReLU
rules themselves, in-place/reused/functional ReLUs, TorchScript refusal, hygiene."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from _gradient_nets import relu_variants, small_resnet
from captum.attr import Deconvolution, NeuronGuidedBackprop
from captum.attr import GuidedBackprop as CGuidedBackprop
from torch import nn

from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot
from unveil.attribution.modified_backward import Deconvnet, GuidedBackprop, _RuleReLU
from unveil.errors import ModelError

pytestmark = [pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU"),
              pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")]


@pytest.fixture(scope="module")
def zoo() -> tuple[nn.Module, torch.Tensor]:
    from unveil.zoo import digits_cnn, load_dataset

    return digits_cnn(), load_dataset("digits_cnn").X_test[:6]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _mlp_reference(net: nn.Sequential, x: torch.Tensor, t: int, guided: bool) -> torch.Tensor:
    """The modified backward pass of a Linear-ReLU-Linear-ReLU-Linear net, written out."""
    W1, b1, W2, b2, W3 = (net[0].weight, net[0].bias, net[2].weight, net[2].bias, net[4].weight)
    h1 = x @ W1.T + b1
    h2 = h1.relu() @ W2.T + b2
    g = W3[t].expand(x.shape[0], -1)
    g = g.clamp_min(0) * ((h2 > 0).double() if guided else 1.0)
    g = g @ W2
    g = g.clamp_min(0) * ((h1 > 0).double() if guided else 1.0)
    return g @ W1


# ---------------------------------------------------------------------------- rules
def test_relu_rules_elementwise() -> None:
    z = torch.tensor([-1.0, -0.5, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([1.0, -1.0, -2.0, 3.0], dtype=torch.float64)
    for deconv, expected in ((False, [0.0, 0.0, 0.0, 3.0]), (True, [1.0, 0.0, 0.0, 3.0])):
        out = _RuleReLU.apply(z * 1, deconv, False)
        torch.testing.assert_close(out, z.detach().relu())
        (gz,) = torch.autograd.grad(out, z, g)
        torch.testing.assert_close(gz, torch.tensor(expected, dtype=torch.float64))
    # with a positive upstream gradient, guided backprop is relu's true gradient
    pos = g.abs()
    out = _RuleReLU.apply(z * 1, False, False)
    (gz,) = torch.autograd.grad(out, z, pos)
    (true,) = torch.autograd.grad(torch.relu(z), z, pos)
    torch.testing.assert_close(gz, true)


@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvnet])
def test_hand_built_reference_float64(cls: type) -> None:
    net = mlp(n_in=5, n_out=3, hidden=8).double().eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    e = cls(net)(x, target=1)
    ref = _mlp_reference(net, x, 1, guided=cls is GuidedBackprop)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- Captum
@pytest.mark.parametrize("which", ["zoo", "resnet"])
def test_agree_with_captum(which: str, zoo: Any) -> None:
    if which == "zoo":
        net, x = zoo
    else:
        torch.manual_seed(3)
        net, x = small_resnet(), torch.randn(3, 3, 12, 12)
    pred = net(x).argmax(1)
    for ours, theirs in ((GuidedBackprop(net), CGuidedBackprop(net)),
                         (Deconvnet(net), Deconvolution(net))):
        e = ours(x)
        ref = theirs.attribute(x.clone(), target=pred).detach()
        assert ref.abs().max() > 1e-4
        torch.testing.assert_close(_t(e.values), ref, rtol=1e-5, atol=1e-7)
        assert e.n_evals == x.shape[0]


def test_neuron_agrees_with_captum(zoo: Any) -> None:
    net, x = zoo
    e = GuidedBackprop(net)(x, neuron=("features.3", (4, 5, 5)))
    ref = NeuronGuidedBackprop(net, net.features[3]).attribute(x, (4, 5, 5)).detach()
    assert ref.abs().max() > 1e-4
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", ["inplace", "reused", "functional"])
@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvnet])
def test_relu_variants_equal_clean_reference(variant: str, cls: type) -> None:
    nets = relu_variants()
    x = torch.randn(4, 1, 8, 8)
    captum_cls = CGuidedBackprop if cls is GuidedBackprop else Deconvolution
    clean = captum_cls(nets["clean"]).attribute(x.clone(), target=2).detach()
    assert clean.abs().max() > 1e-4
    np.testing.assert_allclose(cls(nets["clean"])(x, target=2).values, clean, rtol=1e-5, atol=1e-7)
    e = cls(nets[variant])(x, target=2)
    np.testing.assert_allclose(e.values, clean, rtol=1e-5, atol=1e-7)
    if variant == "functional":  # Captum hooks modules only: its answer here is the plain gradient
        wrong = captum_cls(nets[variant]).attribute(x.clone(), target=2).detach()
        assert (wrong - clean).abs().max() > 1e-3


# ---------------------------------------------------------------------------- refusals, hygiene
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


class _AtenRelu(_CallsScript):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.ops.aten.relu(self.a(x)))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_unreachable_relus_are_refused() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(ModelError, match="TorchScript"):
        GuidedBackprop(torch.jit.script(mlp(4, 2).eval()), batch_size=3)(x, target=0)
    with pytest.raises(ModelError, match="do not pass through Python"):
        Deconvnet(_CallsScript().eval())(x, target=0)
    # a direct torch.ops call is seen and handled
    net = _AtenRelu().eval()
    ref = _CallsScript()
    ref.load_state_dict(net.state_dict())
    e = GuidedBackprop(net)(x, target=1)
    h = net.a(x)
    expected = ((net.b.weight[1].clamp_min(0) * (h > 0)) @ net.a.weight).detach()
    torch.testing.assert_close(_t(e.values), expected)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvnet])
def test_model_unchanged(cls: type, train: bool) -> None:
    net = relu_variants()["inplace"]
    net.train(train)
    snap = snapshot(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(net)(torch.randn(2, 1, 8, 8), target=0, layer="conv2")
    assert_unchanged(net, snap)
    cnn = TinyCNN()
    cnn.train(train)
    cnn.pool = Raises()
    snap = snapshot(cnn)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(cnn)(torch.rand(2, 1, 16, 16), target=0)
    assert_unchanged(cnn, snap)
