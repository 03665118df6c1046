"""Objectives take a layer as a module of the model as well as its dotted name (issue 18)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import unveil as uv
from _util import TinyCNN
from unveil.errors import LayerNotFoundError
from unveil.featurevis import objectives as O


def test_featurevis_objective_takes_a_module() -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    by_module = O.channel(net.features[3], 2)
    named = by_module.named(net)
    assert named.layers == frozenset({"features.3"}) and named.name == "channel('features.3', 2)"
    acts = {"features.3": torch.arange(2 * 8 * 4 * 4, dtype=torch.float32).reshape(2, 8, 4, 4)}
    torch.testing.assert_close(named(acts), O.channel("features.3", 2)(acts))
    with pytest.raises(LayerNotFoundError, match="not a submodule of this model"):
        O.layer(nn.ReLU()).named(net)
    res = uv.visualize(net, by_module, shape=(1, 1, 16, 16), steps=2, seed=0)
    assert res.objective == "channel('features.3', 2)"
