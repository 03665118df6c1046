"""Prepared copies are cached per model object and weights: reuse, invalidation, no leaks."""

from __future__ import annotations

import copy
import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
import unveil.attribution.lrp.method as lrp_method
from unveil.attribution.lrp import LRP, Composite
from unveil.attribution.lrp._engine import prepare
from unveil.core import prepared
from unveil.core.prepared import MAX_PER_MODEL, by_identity, cached, tensor_key


class _Net(nn.Module):
    """conv-BN-ReLU, a residual conv-BN block, pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.relu(self.bn(self.conv(h)) + h)
        return self.fc(self.pool(h).flatten(1))


def _net(seed: int = 0) -> _Net:
    torch.manual_seed(seed)
    net = _Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(autouse=True)
def _empty_store() -> Iterator[None]:
    prepared.clear()
    yield
    prepared.clear()


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts LRP's model preparations."""
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(lrp_method, "prepare", counting)
    return calls


def _x(n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _fresh(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """LRP of an identical, never-seen model object: no cache entry can apply."""
    return np.asarray(uv.explain(copy.deepcopy(model), x, method="lrp").values)


def test_fresh_explain_calls_share_one_preparation(builds: list[int]) -> None:
    model, x = _net(), _x()
    first = uv.explain(model, x, method="lrp")
    for _ in range(3):
        again = uv.explain(model, x, method="lrp")  # a new LRP object each time
        np.testing.assert_array_equal(again.values, first.values)
    assert len(builds) == 1
    uv.explain(model, _x(size=10), method="lrp")  # another input shape: its own copy
    assert len(builds) == 2
    uv.explain(_net(), x, method="lrp")  # another model object with the same weights
    assert len(builds) == 3


@pytest.mark.parametrize("change", ["data_add", "load_state_dict", "optimizer_step", "buffer"])
def test_changed_weights_rebuild(change: str, builds: list[int]) -> None:
    model, x = _net(), _x()
    before = np.asarray(uv.explain(model, x, method="lrp").values)
    if change == "data_add":
        model.conv.weight.data.add_(0.3)
    elif change == "load_state_dict":
        model.load_state_dict(_net(seed=5).state_dict())
    elif change == "optimizer_step":
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        model(x)[:, 0].sum().backward()
        opt.step()
    else:
        model.stem[1].running_mean.add_(0.5)
    after = np.asarray(uv.explain(model, x, method="lrp").values)
    assert len(builds) == 2
    np.testing.assert_allclose(after, _fresh(model, x), rtol=1e-5, atol=1e-7)
    assert not np.allclose(after, before, rtol=1e-3, atol=1e-5)


def test_the_store_does_not_keep_the_model_alive() -> None:
    model, x = _net(), _x()
    uv.explain(model, x, method="lrp")
    ref = weakref.ref(model)
    assert len(prepared._store) == 1
    del model
    gc.collect()
    assert ref() is None
    assert len(prepared._store) == 0


def test_entries_per_model_are_bounded(builds: list[int]) -> None:
    model = _net()
    for size in range(4, 4 + MAX_PER_MODEL + 3):
        uv.explain(model, _x(n=1, size=size), method="lrp")
    assert len(prepared._store[model]) == MAX_PER_MODEL
    n = len(builds)
    uv.explain(model, _x(n=1, size=4 + MAX_PER_MODEL + 2), method="lrp")  # the newest: kept
    assert len(builds) == n
    uv.explain(model, _x(n=1, size=4), method="lrp")  # the oldest: dropped, built again
    assert len(builds) == n + 1


def test_threads_get_the_same_result(builds: list[int]) -> None:
    model, x = _net(), _x()
    expected = _fresh(model, x)
    before = len(builds)  # the fresh model's own preparation
    out: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                out.append(np.asarray(uv.explain(model, x, method="lrp").values))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 12
    for v in out:
        np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-7)
    assert 1 <= len(builds) - before <= 4  # at most one build per thread that missed at once


def test_options_are_part_of_the_key(builds: list[int]) -> None:
    model, x = _net(), _x()
    LRP(model, composite="epsilon")(x)
    LRP(model, composite="epsilon", epsilon=1e-6)(x)  # the same options spelled out
    assert len(builds) == 1
    LRP(model, composite="epsilon", epsilon=0.1)(x)
    LRP(model, composite="epsilon_plus")(x)
    assert len(builds) == 3
    low = torch.full((3, 8, 8), -3.0)
    LRP(model, composite="epsilon_gamma_box", low=low, high=3.0)(x)
    LRP(model, composite="epsilon_gamma_box", low=low.clone(), high=3.0)(x)  # equal values
    assert len(builds) == 4
    LRP(model, composite="epsilon_gamma_box", low=low - 1, high=3.0)(x)
    assert len(builds) == 5
    comp = Composite(name="mine")  # no rules: every layer passes the gradient, with a warning
    with pytest.warns(UserWarning, match="no rule for"):
        LRP(model, composite=comp)(x)
        LRP(model, composite=comp)(x)  # the same Composite object
    assert len(builds) == 6
    with pytest.warns(UserWarning, match="no rule for"):
        LRP(model, composite=Composite(name="mine"))(x)  # an equal but distinct object
    assert len(builds) == 7


def test_warnings_repeat_on_reuse(builds: list[int]) -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2)).eval()
    x = torch.randn(3, 4)
    for _ in range(2):
        with pytest.warns(UserWarning, match=r"no rule for 1 \(LayerNorm\)"):
            uv.explain(model, x, method="lrp")
    assert len(builds) == 1


def test_key_parts() -> None:
    a, b = Composite(), Composite()
    assert by_identity(a) == by_identity(a) and by_identity(a) != by_identity(b)
    assert hash(by_identity(a)) == id(a)
    net16 = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).half())  # mixed dtypes: one state
    assert cached(net16, ("k",), lambda: 1) == 1 and cached(net16, ("k",), lambda: 2) == 1
    t = torch.arange(4.0)
    assert tensor_key(t) == tensor_key(t.clone()) and tensor_key(t) != tensor_key(t + 1)
    assert tensor_key(t) != tensor_key(t.double())
    net = nn.Linear(2, 1)
    built = cached(net, ("k",), lambda: ["value"])
    assert cached(net, ("k",), lambda: ["other"]) is built
    net.load_state_dict(nn.Linear(2, 1).state_dict())  # copies in place: versions move
    assert cached(net, ("k",), lambda: ["other"]) == ["other"]
