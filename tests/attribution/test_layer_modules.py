"""``layer=`` takes a module of the model as well as its dotted name (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from _util import TinyCNN
from unveil.errors import LayerNotFoundError


@pytest.fixture(scope="module")
def cnn() -> tuple[TinyCNN, torch.Tensor]:
    torch.manual_seed(0)
    return TinyCNN().eval(), torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("method", ["integrated_gradients", "grad_cam"])
def test_module_equals_dotted_name(cnn: tuple[TinyCNN, torch.Tensor], method: str) -> None:
    net, x = cnn
    opts = {"n_steps": 8} if method == "integrated_gradients" else {}
    by_module = uv.explain(net, x, method=method, layer=net.features[3], **opts)
    by_name = uv.explain(net, x, method=method, layer="features.3", **opts)
    assert np.abs(by_name.values).max() > 0  # not a trivial agreement
    np.testing.assert_array_equal(by_module.values, by_name.values)
    assert by_module.meta["layer"] == "features.3"
    assert "Conv2d(" not in repr(by_module.summary())  # the module's repr is stored nowhere


@pytest.mark.parametrize("method", ["integrated_gradients", "grad_cam"])
def test_foreign_module_gives_a_short_error(cnn: tuple[TinyCNN, torch.Tensor], method: str) -> None:
    net, x = cnn
    stranger = nn.Conv2d(6, 8, 3, padding=1)
    with pytest.raises(LayerNotFoundError, match=r"a Conv2d that is not a submodule of this model "
                                                 r"\(TinyCNN\).*features\.0") as info:
        uv.explain(net, x, method=method, layer=stranger)
    assert "in_channels" not in str(info.value) and "padding=" not in str(info.value)
    assert len(str(info.value)) < 300


def test_neuron_tuple_takes_a_module(cnn: tuple[TinyCNN, torch.Tensor]) -> None:
    net, x = cnn
    a = uv.explain(net, x, method="saliency", neuron=(net.features[3], (2, 4, 4)))
    b = uv.explain(net, x, method="saliency", neuron=("features.3", (2, 4, 4)))
    assert np.abs(b.values).max() > 0
    np.testing.assert_array_equal(a.values, b.values)


def test_module_for_a_model_that_is_not_a_module() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return x.sum(1, keepdim=True)

    with pytest.raises(LayerNotFoundError, match="a Linear module was given, but the model is not a torch.nn.Module"):
        uv.explain(fn, torch.ones(2, 3), method="integrated_gradients", layer=nn.Linear(3, 3))
