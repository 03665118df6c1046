"""Every feature-visualization routine leaves the model as it found it: hooks, modes, flags,
weights, buffers and .grad, in train and eval mode, and when a submodule raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _util import Raises, assert_unchanged, snapshot
from unveil.featurevis import (
    activation_stats,
    class_mean_activations,
    dataset_examples,
    invert,
    visualize,
    weight_stats,
)
from unveil.featurevis import objectives as O


class Net(nn.Module):
    def __init__(self, raises: str = "") -> None:
        super().__init__()
        self.pre: nn.Module = Raises() if raises == "early" else nn.Identity()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(24, 4)
        self.post: nn.Module = Raises() if raises == "late" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.relu(self.bn(self.conv(self.pre(x)))))
        return self.post(self.head(self.pool(h).flatten(1)))


X = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 3, 0, 1])

RUNS = {
    "visualize_channel": lambda m: visualize(m, O.channel("bn", [1, 2]) + O.diversity("conv"),
                                             shape=(2, 3, 12, 12), n_steps=3, tv=0.1, l1=0.1, blur=0.1),
    "visualize_logit": lambda m: visualize(m, O.class_logit(1), shape=(1, 3, 12, 12), n_steps=3, param="pixel"),
    "invert": lambda m: invert(m, X[:2], layer="relu", n_steps=3),
    "dataset_examples": lambda m: dataset_examples(m, X, layer="bn", unit=2, k=3, batch_size=4),
    "activation_stats": lambda m: activation_stats(m, X, batch_size=4),
    "class_means_predicted": lambda m: class_mean_activations(m, X, layer="relu"),
    "class_means_labels": lambda m: class_mean_activations(m, X, layer="relu", labels=Y),
    "weight_stats": lambda m: weight_stats(m),
}
# which runs reach the raising module (early stops skip the tail of the network)
REACHES_LATE = {"visualize_logit", "class_means_predicted", "activation_stats"}


def _model(raises: str, train: bool) -> nn.Module:
    torch.manual_seed(0)
    m = Net(raises)
    m.train(train)
    m.conv.weight.grad = torch.full_like(m.conv.weight, 0.5)  # must survive untouched
    m.bn.weight.requires_grad_(False)  # a mixed set of flags to restore
    return m


@pytest.mark.filterwarnings("ignore:the model is in training mode")
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", sorted(RUNS))
def test_model_unchanged_after_a_normal_run(name, train):
    m = _model("", train)
    before = snapshot(m)
    RUNS[name](m)
    assert_unchanged(m, before)


@pytest.mark.filterwarnings("ignore:the model is in training mode")
@pytest.mark.parametrize("where", ["early", "late"])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", sorted(set(RUNS) - {"weight_stats"}))
def test_model_unchanged_when_a_submodule_raises(name, train, where):
    m = _model(where, train)
    before = snapshot(m)
    if where == "early" or name in REACHES_LATE:
        with pytest.raises(RuntimeError, match="boom from inside the model"):
            RUNS[name](m)
    else:
        RUNS[name](m)  # the forward pass stops before the raising module
    assert_unchanged(m, before)
