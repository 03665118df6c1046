"""Helpers shared by the tests: small models, and a snapshot of everything a method must not change."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn


class TinyCNN(nn.Module):
    """A small CNN with named layers, for image tests (1x16x16 or 3x16x16 inputs)."""

    def __init__(self, in_ch: int = 1, n_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def mlp(n_in: int = 6, n_out: int = 3, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class Raises(nn.Module):
    """A submodule that raises on its forward pass (to test clean-up on error)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom from inside the model")


@dataclass
class Snapshot:
    state: dict[str, torch.Tensor]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, Any]
    n_hooks: int
    attrs: dict[str, set[str]]


def _count_hooks(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                  "_forward_hooks_with_kwargs", "_state_dict_hooks"):
            n += len(getattr(m, d, {}) or {})
    for p in model.parameters():
        n += len(getattr(p, "_backward_hooks", None) or {})
    return n


def snapshot(model: nn.Module) -> Snapshot:
    """Everything about a model that an explanation must leave as it found it."""
    return Snapshot(
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        training={n: m.training for n, m in model.named_modules()},
        requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
        grads={n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        n_hooks=_count_hooks(model),
        attrs={n: set(vars(m)) for n, m in model.named_modules()},
    )


def assert_unchanged(model: nn.Module, before: Snapshot) -> None:
    after = snapshot(model)
    assert after.n_hooks == before.n_hooks, "hooks left on the model"
    assert after.training == before.training, "training flags changed"
    assert after.requires_grad == before.requires_grad, "requires_grad flags changed"
    assert after.attrs == before.attrs, "attributes added to or removed from modules"
    assert set(after.state) == set(before.state)
    for k, v in before.state.items():
        assert torch.equal(after.state[k], v), f"state {k} changed"
    for k, g in before.grads.items():
        ga = after.grads[k]
        assert (g is None) == (ga is None) and (g is None or torch.equal(g, ga)), f".grad of {k} changed"


def training_warning(train: bool) -> contextlib.AbstractContextManager[Any]:
    """Expect the warning about a model in training mode when ``train``, else nothing."""
    if train:
        return pytest.warns(UserWarning, match="the model is in training mode")
    return contextlib.nullcontext()
