"""LRP: canonizers keep outputs, functional forms, caching, options, errors, no side effects."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _cam_models import res_cnn
from torch import nn

import unveil
from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot
from unveil.attribution.lrp import (
    LINEAR_LAYERS,
    LRP,
    PRESETS,
    Composite,
    MergeBatchNorm,
    ResidualAddition,
    rules,
)
from unveil.attribution.lrp._engine import prepare
from unveil.core.registry import get_method
from unveil.errors import InputError, ModelError, OptionError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_canonizers_leave_outputs_unchanged():
    model = res_cnn().double()
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    prep = prepare(model, x[:1], Composite(layer_map=[(LINEAR_LAYERS, rules.epsilon())],
                                           canonizers=[MergeBatchNorm(), ResidualAddition()]))
    assert prep.changes == ["stem.0<-stem.1", "layer1.conv1<-layer1.bn1", "layer1.conv2<-layer1.bn2",
                            "layer2.conv1<-layer2.bn1", "layer2.conv2<-layer2.bn2",
                            "layer2.short.0<-layer2.short.1"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prep.module.modules())
    with torch.no_grad():
        expected = model(x)
        plain = prep.module(x)
        with prep.relevance_mode():
            routed = prep.module(x.clone().requires_grad_(True))
    torch.testing.assert_close(plain, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(routed, expected, rtol=1e-12, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad(), prep.relevance_mode():
        torch.testing.assert_close(prep.module(xg), expected, rtol=1e-12, atol=1e-12)


def test_residual_rule_splits_in_proportion():
    """R_a = a R / (a + b): with a ReLU after the sum and ε-rule dense layers, the addition's
    share to each branch is checked on a two-branch net by hand."""

    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4, bias=False)
            self.b = nn.Linear(3, 4, bias=False)
            self.out = nn.Linear(4, 1, bias=False)

        def forward(self, x):
            return self.out(self.a(x) + self.b(x))

    torch.manual_seed(0)
    net = TwoBranch().double().eval()
    x = torch.randn(1, 3, dtype=torch.float64)
    e = LRP(net, composite="epsilon", epsilon=0.0, stabilizer=0.0)(x, target=0)
    za, zb = net.a(x)[0].detach(), net.b(x)[0].detach()
    s = za + zb
    r_out = net.out.weight[0].detach() * s  # ε-rule (ε = 0) at the output layer, R = score
    ra, rb = za / s * r_out, zb / s * r_out
    wa, wb = net.a.weight.detach(), net.b.weight.detach()
    expected = (x[0] * (wa / (wa @ x[0])[:, None] * ra[:, None]).sum(0)
                + x[0] * (wb / (wb @ x[0])[:, None] * rb[:, None]).sum(0))
    np.testing.assert_allclose(e.values[0], expected.numpy(), rtol=1e-10)
    assert e.delta is not None
    np.testing.assert_allclose(e.delta, 0, atol=1e-10)


def test_functional_forms_match_modules():
    """F.relu, F.avg_pool2d, x.mean and `+=` inside forward get the same rules as the module
    forms (pass, norm, sum)."""

    class Functional(nn.Module):
        def __init__(self, conv1, conv2, fc):
            super().__init__()
            self.conv1, self.conv2, self.fc = conv1, conv2, fc

        def forward(self, x):
            h = F.relu(self.conv1(x))
            y = self.conv2(h)
            y += h
            return self.fc(F.avg_pool2d(F.gelu(y), 2).mean((2, 3)))

    class Modular(nn.Module):
        def __init__(self, conv1, conv2, fc):
            super().__init__()
            self.conv1, self.conv2, self.fc = conv1, conv2, fc
            self.relu, self.gelu = nn.ReLU(), nn.GELU()
            self.pool1, self.pool2 = nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            h = self.relu(self.conv1(x))
            y = self.conv2(h) + h
            return self.fc(self.pool2(self.pool1(self.gelu(y))).flatten(1))

    torch.manual_seed(0)
    parts = (nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3))
    f, m = Functional(*parts).double().eval(), Modular(*parts).double().eval()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    a = LRP(f, composite="epsilon_plus")(x)
    b = LRP(m, composite="epsilon_plus")(x)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-10, atol=1e-14)
    grad_through_gelu = LRP(m, composite=Composite(
        layer_map=[((nn.GELU,), rules.gradient()), (LINEAR_LAYERS, rules.epsilon())]))(x)
    plain = LRP(m, composite="epsilon")(x)
    assert np.abs(grad_through_gelu.values - plain.values).max() > 1e-3 * np.abs(plain.values).max()


def test_batch_norm_whose_input_is_reused_is_not_folded():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.bn = nn.BatchNorm2d(2)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.fc((self.bn(y) + y).relu().mean((2, 3)))

    model = Reuse().eval()
    with torch.no_grad():
        model.bn.running_var.fill_(4.0)
    x = torch.randn(2, 1, 5, 5)
    with pytest.warns(UserWarning, match="folding batch norms changed the model's outputs"):
        e = LRP(model)(x)
    assert e.meta["canonized"] == [] and e.meta["rules"]["bn"] == "pass"


def test_layers_without_rules_are_reported():
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with pytest.warns(UserWarning, match=r"no rule for 1 \(LayerNorm\)"):
        e = LRP(model)(torch.randn(3, 4))
    assert e.meta["no_rule"] == ["1 (LayerNorm)"]


def test_batches_cache_and_counts():
    model = res_cnn()
    x = torch.randn(5, 3, 16, 16)
    lrp = LRP(model, composite="epsilon_plus_flat", batch_size=2)
    a = lrp(x)
    assert a.n_evals == 5 and a.meta["composite"] == "epsilon_plus_flat"
    b = LRP(model, composite="epsilon_plus_flat", batch_size=64)(x)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-4, atol=1e-6)
    first = lrp._prepared
    lrp(x)
    assert lrp._prepared is first  # reused while the parameters are unchanged
    with torch.no_grad():
        model.fc.weight.mul_(2)
    c = lrp(x)
    assert lrp._prepared is not first and lrp._prepared is not None
    np.testing.assert_allclose(c.values, 2 * a.values, rtol=1e-4, atol=1e-6)  # linear in the head


def test_outputs_and_targets():
    torch.manual_seed(0)
    model = mlp(6, 3).double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    e = unveil.explain(model, x, method="lrp", composite="epsilon", target=2)
    assert e.outputs is not None
    np.testing.assert_allclose(e.outputs, model(x)[:, 2].detach().numpy(), rtol=1e-12)
    assert e.params["composite"] == "epsilon" and e.modality == "tabular"
    one = nn.Sequential(model, nn.Linear(3, 1), nn.Flatten(0)).double().eval()
    e1 = LRP(one, composite="epsilon")(x, target=None)
    assert e1.targets is None and e1.values.shape == x.shape
    from unveil.core.model import Model

    probs = LRP(Model(model, output="probs"), composite="epsilon")(x, target=2)
    np.testing.assert_allclose(probs.values, e.values, rtol=1e-12)  # the logit is explained
    assert probs.meta["explained"] == "logits"


@pytest.mark.parametrize("name", PRESETS)
def test_presets_run_on_a_residual_cnn(name):
    e = LRP(res_cnn(), composite=name)(torch.randn(2, 3, 16, 16))
    assert np.isfinite(e.values).all() and np.abs(e.values).max() > 0
    assert e.meta["canonizers"] == ["MergeBatchNorm()", "ResidualAddition(stabilizer=1e-06)"]


def test_errors():
    model = TinyCNN().eval()
    x = torch.randn(2, 1, 16, 16)
    with pytest.raises(OptionError, match=r"composite='zplus' should be 'epsilon' \| 'epsilon_plus'"):
        LRP(model, composite="zplus")
    with pytest.raises(OptionError, match=r"composite=3 should be .*\| Composite"):
        LRP(model, composite=3)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="option epsilon=-1.0 is outside >= 0"):
        LRP(model, epsilon=-1.0)
    with pytest.raises(OptionError, match="alpha - beta = 1"):
        rules.alpha_beta(2.0, 2.0)
    with pytest.raises(OptionError, match="gamma must be >= 0"):
        rules.gamma(-0.1)
    with pytest.raises(ModelError, match="apply to Linear and Conv1d/2d/3d layers only"):
        LRP(model, composite=Composite(name_map={"features.1": rules.epsilon()}))(x)
    with pytest.raises(ModelError, match="needs a torch.nn.Module"):
        LRP(lambda t: t.sum(1, keepdim=True))(torch.randn(2, 3))
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)).eval()
    with pytest.raises(InputError, match="integers"):
        LRP(emb)(torch.randint(0, 10, (2, 3)))
    with pytest.raises(OptionError, match="'lrp' takes no option 'baseline'"):
        LRP(model)(x, baseline="zeros")


@pytest.mark.parametrize("train", [False, True])
def test_model_unchanged(train):
    model = res_cnn()
    model.train(train)
    x = torch.randn(2, 3, 16, 16)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        LRP(model, composite="epsilon_plus_flat")(x)
    assert_unchanged(model, before)
    model.layer2.relu2 = nn.Sequential(nn.ReLU(), Raises())
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        LRP(model)(x)
    assert_unchanged(model, before)


def test_registered():
    info = get_method("lrp")
    assert info.cls is LRP and info.needs_gradients and info.family == "lrp"
