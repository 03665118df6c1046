"""Token ids and layer spaces: attribution at the embedding output summed over the hidden axis,
against Captum's layer methods; every gradient method on token ids; layer pitfalls and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _gradient_nets import token_net
from captum.attr import LayerDeepLift, LayerGradientXActivation, LayerIntegratedGradients
from torch import nn

import unveil as uv
from _util import assert_unchanged, snapshot
from unveil.attribution import deeplift, gradient_shap, modified_backward, smooth  # noqa: F401
from unveil.attribution.deeplift import DeepLift
from unveil.attribution.gradient import InputXGradient, Saliency
from unveil.attribution.path import IntegratedGradients
from unveil.errors import BaselineError, ModelError, OptionError

pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")


@pytest.fixture()
def tokens() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(4)
    return token_net(), torch.randint(1, 20, (4, 7))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def test_ig_on_token_ids_matches_captum_layer_ig(tokens: Any) -> None:
    net, ids = tokens
    e = IntegratedGradients(net, n_steps=32)(ids, target=1)
    ref = LayerIntegratedGradients(net, net.emb).attribute(
        ids, baselines=torch.zeros_like(ids), target=1, n_steps=32).detach().sum(-1)
    assert e.values.shape == (4, 7) and e.meta["layer"] == "emb" and e.modality == "text"
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-4, atol=1e-6)
    # per-token values sum to f(x) - f(pad baseline) up to delta, which n_steps="auto" bounds
    with torch.no_grad():
        gap = net(ids)[:, 1] - net(torch.zeros_like(ids))[:, 1]
    torch.testing.assert_close(_t(e.values.sum(1) - e.delta), gap, atol=1e-5, rtol=0)
    auto = IntegratedGradients(net, n_steps="auto", tol=0.01)(ids, target=1)
    assert np.all(np.abs(auto.values.sum(1) - gap.numpy()) <= 0.01 * np.abs(gap.numpy()) + 1e-5)


def test_input_x_gradient_and_deeplift_on_token_ids(tokens: Any) -> None:
    net, ids = tokens
    e = InputXGradient(net)(ids, target=0)
    ref = LayerGradientXActivation(net, net.emb).attribute(ids, target=0).detach().sum(-1)
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-5, atol=1e-7)
    pad = torch.full_like(ids, 3)
    e = DeepLift(net)(ids, target=0, baseline=3)
    ref = LayerDeepLift(net, net.emb).attribute(ids, baselines=pad, target=0).detach().sum(-1)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-4, atol=1e-6)
    net64 = token_net().double()
    e = DeepLift(net64)(ids, target=0, baseline=pad)
    assert e.delta is not None and e.outputs is not None and e.baseline_outputs is not None
    assert np.abs(e.delta).max() < 1e-10 < np.abs(e.outputs - e.baseline_outputs).max()


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients",
                                    "smoothgrad", "vargrad", "gradient_shap", "guided_backprop",
                                    "deconvnet", "deeplift", "deeplift_shap"])
def test_every_gradient_method_takes_token_ids(method: str, tokens: Any) -> None:
    net, ids = tokens
    opts: dict[str, Any] = {"target": 2}
    if method in ("gradient_shap", "deeplift_shap"):
        opts["background"] = torch.randint(0, 20, (3, 7))
    if method in ("smoothgrad", "vargrad", "gradient_shap"):
        opts.update(seed=0, n_samples=4)
    if method == "integrated_gradients":
        opts["n_steps"] = 8
    snap = snapshot(net)
    e = uv.explain(net, ids, method=method, **opts)
    assert e.values.shape == (4, 7) and np.isfinite(e.values).all() and np.abs(e.values).max() > 0
    assert e.meta["layer"] == "emb"
    if method in ("smoothgrad", "gradient_shap"):  # stderr of the per-token values
        assert e.stderr is not None and e.stderr.shape == (4, 7)
    assert_unchanged(net, snap)


def test_layer_choice_and_neuron_on_tokens(tokens: Any) -> None:
    net, ids = tokens
    e = InputXGradient(net)(ids, target=1, layer="fc1")  # (N, T, 12) summed to (N, T)
    ref = LayerGradientXActivation(net, net.fc1).attribute(ids, target=1).detach().sum(-1)
    torch.testing.assert_close(_t(e.values), ref, rtol=1e-5, atol=1e-7)
    unit = Saliency(net, abs=False)(ids, neuron=("fc1", lambda a: a[:, 0, 3]))
    assert unit.values.shape == (4, 7)
    assert np.abs(unit.values[:, 1:]).max() == 0 < np.abs(unit.values[:, 0]).max()  # token 0 only


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.shared(self.shared(x)))


def test_layer_errors(tokens: Any) -> None:
    net, ids = tokens
    with pytest.raises(BaselineError, match="does not apply to token ids"):
        IntegratedGradients(net)(ids, baseline="blur")
    with pytest.raises(ModelError, match="runs more than once per forward pass"):
        Saliency(_Twice().eval())(torch.randn(2, 4), target=0, layer="shared")
    unused = _Twice().eval()
    unused.spare = nn.Linear(4, 4).eval()
    with pytest.raises(ModelError, match="did not run in the model's forward pass"):
        Saliency(unused)(torch.randn(2, 4), target=0, layer="spare")
    with pytest.raises(OptionError, match="one value per row"):
        Saliency(net)(ids, neuron=("fc1", lambda a: a[:, 0]))
    with pytest.raises(OptionError, match="neuron index must be"):
        Saliency(net)(ids, neuron=("fc1", "x"))
