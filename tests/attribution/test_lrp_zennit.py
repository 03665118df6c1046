"""LRP against Zennit 0.5.1 for the same composites, in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _cam_models import ResBlock, randomize_bn, res_cnn
from torch import nn

from unveil.attribution.lrp import LINEAR_LAYERS, LRP, Composite, rules


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def vgg(bn_eps: float) -> nn.Sequential:
    """A VGG-like CNN: conv-BN-ReLU blocks, max and average pooling, dropout, two dense layers.

    Zennit's batch-norm merge leaves a BN with mean 0, variance 1 in place, which still divides
    by sqrt(1 + eps); a tiny ``eps`` keeps that from shifting its results by ~eps/2.
    """
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, eps=bn_eps), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16, eps=bn_eps), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 5),
    )
    return randomize_bn(m).double().eval()


def zennit_relevance(model, x, target, composite):
    from zennit.attribution import Gradient

    with Gradient(model, composite) as attributor:
        out = model(x)
        onehot = torch.zeros_like(out)
        onehot[torch.arange(len(x)), target] = 1
        _, rel = attributor(x, lambda o: onehot * o)  # relevance at the output: the score
    return rel.detach().numpy()


def zennit_composite(name: str, canonizers):
    from zennit.composites import (
        EpsilonAlpha2Beta1,
        EpsilonGammaBox,
        EpsilonPlus,
        EpsilonPlusFlat,
        LayerMapComposite,
        layer_map_base,
    )
    from zennit.rules import Epsilon
    from zennit.types import Linear

    if name == "epsilon":  # Zennit has no preset for ε everywhere; its base map plus ε
        return LayerMapComposite(layer_map_base() + [(Linear, Epsilon())], canonizers=canonizers)
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=-3.0, high=3.0, canonizers=canonizers)
    cls = {"epsilon_plus": EpsilonPlus, "epsilon_plus_flat": EpsilonPlusFlat,
           "epsilon_alpha2_beta1": EpsilonAlpha2Beta1}[name]
    return cls(canonizers=canonizers)


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


PRESETS = ["epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
           "epsilon_alpha2_beta1"]


@pytest.mark.parametrize("name", PRESETS)
def test_vgg_equals_zennit(name, torchvision_stub):
    from zennit.canonizers import SequentialMergeBatchNorm

    model = vgg(bn_eps=1e-12)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = model(x).argmax(1)
    opts: dict[str, Any] = {"low": -3.0, "high": 3.0} if name == "epsilon_gamma_box" else {}
    ours = LRP(model, composite=name, **opts)(x, target=target)
    ref = zennit_relevance(model, x, target, zennit_composite(name, [SequentialMergeBatchNorm()]))
    assert np.abs(ref).max() > 1e-6 and ref.std() > 0.05 * np.abs(ref).max()
    assert ours.meta["canonized"] == ["0<-1", "6<-7"]
    assert rel_err(ours.values, ref) <= 1e-5


def resblock_canonizer():
    """Zennit's own residual canonizers cover torchvision's block classes only: this one does
    for the test's ResBlock what they do for BasicBlock — sum the two branches with a ``Sum``
    module, so that Zennit's ``Norm`` rule applies to the addition."""
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.canonizer_sum(torch.stack([self.short(x), y], dim=-1)))

    def attribute_map(name, module):
        if isinstance(module, ResBlock):
            return {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return AttributeCanonizer(attribute_map)


@pytest.mark.parametrize("name", ["epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1"])
def test_residual_cnn_equals_zennit_with_a_residual_canonizer(name, torchvision_stub):
    """unveil's addition rule splits relevance in proportion to the summands (ε-stabilised),
    which is Zennit's Norm rule on a Sum; plain Zennit (no canonizer for this block) instead
    hands each summand the whole relevance, and then the two disagree."""
    from zennit.canonizers import SequentialMergeBatchNorm

    model = res_cnn(bn_eps=1e-12).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    target = model(x).argmax(1)
    ours = LRP(model, composite=name)(x, target=target)
    canon = [SequentialMergeBatchNorm(), resblock_canonizer()]
    ref = zennit_relevance(model, x, target, zennit_composite(name, canon))
    assert np.abs(ref).max() > 1e-6 and ref.std() > 0.05 * np.abs(ref).max()
    assert rel_err(ours.values, ref) <= 1e-5
    plain = zennit_relevance(model, x, target, zennit_composite(name, [SequentialMergeBatchNorm()]))
    r = np.corrcoef(plain.ravel(), ours.values.ravel())[0, 1]
    assert rel_err(ours.values, plain) > 0.1 and r < 0.99


def test_custom_composite_equals_zennit_name_and_type_maps(torchvision_stub):
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import NameLayerMapComposite, layer_map_base
    from zennit.rules import AlphaBeta, Epsilon, Gamma, ZPlus
    from zennit.types import Convolution

    model = vgg(bn_eps=1e-12)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours = LRP(model, composite=Composite(
        name_map={"3": rules.alpha_beta(1.0, 0.0), "14": rules.epsilon(0.25)},
        layer_map=[((nn.Conv2d,), rules.gamma(0.5)), (LINEAR_LAYERS, rules.z_plus())],
    ))(x)
    ref = zennit_relevance(model, x, ours.targets, NameLayerMapComposite(
        name_map=[(("3",), AlphaBeta(1.0, 0.0)), (("14",), Epsilon(0.25))],
        layer_map=layer_map_base() + [(Convolution, Gamma(0.5)), (nn.Linear, ZPlus())],
        canonizers=[SequentialMergeBatchNorm()],
    ))
    assert ours.meta["rules"]["3"] == "alpha1_beta0" and ours.meta["rules"]["0"] == "gamma"
    assert rel_err(ours.values, ref) <= 1e-5
