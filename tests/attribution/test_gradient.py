"""Saliency and Input x Gradient: closed forms, Captum agreement, layer/neuron, errors, hygiene."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _gradient_nets import small_resnet
from captum.attr import InputXGradient as CInputXGradient
from captum.attr import LayerGradientXActivation, NeuronGradient
from captum.attr import Saliency as CSaliency
from torch import nn

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot
from unveil.attribution.gradient import InputXGradient, Saliency
from unveil.errors import (
    InputError,
    LayerNotFoundError,
    NotDifferentiableError,
    OptionError,
    TargetError,
)

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


@pytest.fixture(scope="module")
def zoo() -> tuple[nn.Module, torch.Tensor]:
    from unveil.zoo import digits_cnn, load_dataset

    return digits_cnn(), load_dataset("digits_cnn").X_test[:8]


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    return small_resnet(), torch.randn(4, 3, 12, 12)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


# ---------------------------------------------------------------------------- closed forms
def test_linear_closed_forms() -> None:
    lin = nn.Linear(5, 3).eval()
    x = torch.randn(4, 5)
    w = lin.weight.detach()
    sal = Saliency(lin, abs=False)(x, target=2)
    torch.testing.assert_close(_t(sal.values), w[2].expand(4, 5))
    assert Saliency(lin)(x, target=2).values.min() >= 0
    ixg = InputXGradient(lin)(x, target=[0, 1, 2, 0])
    torch.testing.assert_close(_t(ixg.values), x * w[[0, 1, 2, 0]])
    assert ixg.outputs is not None
    torch.testing.assert_close(_t(ixg.outputs), lin(x).detach()[range(4), [0, 1, 2, 0]])


# ---------------------------------------------------------------------------- Captum agreement
@pytest.mark.parametrize("which", ["zoo", "resnet"])
def test_agree_with_captum(which: str, request: pytest.FixtureRequest) -> None:
    net, x = request.getfixturevalue(which)
    pred = net(x).argmax(1)
    for ours, theirs, kw in ((Saliency(net), CSaliency(net), {}),
                             (Saliency(net, abs=False), CSaliency(net), {"abs": False}),
                             (InputXGradient(net), CInputXGradient(net), {})):
        e = ours(x)  # target defaults to the predicted class
        ref = theirs.attribute(x.clone(), target=pred, **kw).detach()
        assert ref.abs().max() > 1e-4
        torch.testing.assert_close(_t(e.values), ref, rtol=1e-5, atol=1e-7)
        assert e.targets is not None
        assert np.array_equal(e.targets, pred.numpy())
        assert e.n_evals == x.shape[0]  # one fused forward+backward per row


def test_layer_and_neuron_agree_with_captum(zoo: tuple[nn.Module, torch.Tensor]) -> None:
    net, x = zoo
    e = InputXGradient(net)(x, target=3, layer="features.3")
    ref = LayerGradientXActivation(net, net.features[3]).attribute(x, target=3).detach()
    assert e.values.shape == (8, 32, 16, 16) and e.meta["layer"] == "features.3"
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-5, atol=1e-7)
    e = Saliency(net, abs=False)(x, neuron=("features.3", (5, 4, 6)))
    ref = NeuronGradient(net, net.features[3]).attribute(x, (5, 4, 6)).detach()
    assert ref.abs().max() > 1e-4
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        unit = net.features[:4](x)[:, 5, 4, 6]
    assert e.outputs is not None
    torch.testing.assert_close(_t(e.outputs), unit)
    # a bare index with layer= names a unit of that layer; attributions go to the input
    e2 = Saliency(net, abs=False)(x, layer="features.3", neuron=(5, 4, 6))
    np.testing.assert_array_equal(e2.values, e.values)


def test_layer_followed_by_inplace_relu() -> None:
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 2)).eval()
    x = torch.randn(5, 4)
    e = InputXGradient(net)(x, target=1, layer="0")
    with torch.no_grad():
        act = net[0](x)
    expected = act * (act > 0) * net[2].weight[1]
    torch.testing.assert_close(_t(e.values), expected)


def test_plain_function_and_batch_size_invariance() -> None:
    net = TinyCNN().eval()
    x = torch.rand(7, 1, 16, 16)
    ref = Saliency(net, batch_size=2)(x, target=1)
    e = Saliency(lambda t: net(t))(x, target=1)  # a plain torch function: generic call path
    np.testing.assert_allclose(e.values, ref.values, rtol=1e-5, atol=1e-8)
    assert e.n_evals >= x.shape[0]


def test_explain_entry_point() -> None:
    net = mlp().eval()
    x = torch.randn(3, 6)
    e = uv.explain(net, x, method="input_x_gradient", target=0)
    assert e.method == "input_x_gradient" and e.values.shape == (3, 6)


# ---------------------------------------------------------------------------- errors
def test_bad_inputs_and_options() -> None:
    net = mlp().eval()
    x = torch.randn(3, 6)
    with pytest.raises(InputError, match="NaN or infinite"):
        Saliency(net)(torch.full((2, 6), float("nan")))
    with pytest.raises(TargetError, match="out of range"):
        Saliency(net)(x, target=7)
    with pytest.raises(TargetError, match="one integer per row"):
        Saliency(net)(x, target=[0, 1])
    with pytest.raises(LayerNotFoundError, match="no layer 'nope'"):
        Saliency(net)(x, layer="nope")
    with pytest.raises(OptionError, match="needs the layer that holds the unit"):
        Saliency(net)(x, neuron=3)
    with pytest.raises(OptionError, match="one index per axis"):
        Saliency(net)(x, neuron=("1", (0, 1)))
    with pytest.raises(OptionError, match="out of range"):
        Saliency(net)(x, neuron=("1", 99))
    with pytest.raises(OptionError, match="'saliency' takes no option 'baseline'"):
        Saliency(net)(x, baseline="zeros")
    with pytest.raises(InputError, match="no nn.Embedding"):
        Saliency(net)(torch.randint(0, 3, (2, 6)))
    with pytest.raises(NotDifferentiableError, match="does not depend differentiably"):
        Saliency(net)(x, neuron=("0", 1), layer="2")  # the unit comes before the layer


def test_numpy_model_is_refused() -> None:
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(20, 3))
    clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(NotDifferentiableError, match="needs gradients"):
        Saliency(clf)(X[:2])


# ---------------------------------------------------------------------------- hygiene
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("cls", [Saliency, InputXGradient])
def test_model_unchanged(cls: type, train: bool) -> None:
    net = TinyCNN()
    net.train(train)
    snap = snapshot(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(net)(torch.rand(2, 1, 16, 16), target=1, layer="features.3")
        cls(net)(torch.rand(2, 1, 16, 16), neuron=("features.3", (1, 2, 2)))
    assert_unchanged(net, snap)
    net.pool = Raises()
    snap = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(net)(torch.rand(2, 1, 16, 16), layer="features.3")
    assert_unchanged(net, snap)
