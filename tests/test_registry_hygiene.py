"""Every registered method, run normally and with a submodule that raises, in train and eval mode,
leaves the model as it found it: no hooks, same flags, parameters, gradients and attributes."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot

# small budgets so the whole registry runs in seconds; only options a method accepts are passed
SMALL = {"n_steps": 4, "n_samples": 32, "max_evals": 64, "n_iter": 2}
FAMILIES_WITH_OWN_TESTS = {"attention"}  # need attention modules; covered in tests/attention


def _accepted(fn: Any) -> set[str]:
    return set(inspect.signature(fn).parameters)


def _setup(modality: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    if modality == "image":
        return TinyCNN(in_ch=1), torch.rand(2, 1, 16, 16), torch.rand(4, 1, 16, 16)
    return mlp(n_in=6, n_out=3), torch.randn(2, 6), torch.randn(4, 6)


def _cases() -> list[Any]:
    out = []
    for info in uv.methods():
        if info.family in FAMILIES_WITH_OWN_TESTS:
            continue
        for modality in ("image", "tabular"):
            if modality in info.modalities:
                out.append(pytest.param(info.name, modality, id=f"{info.name}-{modality}"))
    return out


def _run(name: str, model: torch.nn.Module, x: torch.Tensor, bg: torch.Tensor) -> uv.Explanation:
    info = {m.name: m for m in uv.methods()}[name]
    init = {k: v for k, v in SMALL.items() if k in _accepted(vars(info.cls).get("__init__", info.cls))}
    call_params = _accepted(getattr(info.cls, "_attribute"))  # noqa: B009  # not on the base type
    call: dict[str, Any] = {}
    if "background" in call_params:
        call["background"] = bg
    if "seed" in call_params:
        call["seed"] = 0
    return info.cls(model, **init)(x, target=1, **call)  # type: ignore[no-any-return]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("name", "modality"), _cases())
def test_method_leaves_model_unchanged(name: str, modality: str, train: bool) -> None:
    model, x, bg = _setup(modality)
    model.train(train)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = _run(name, model, x, bg)
    assert_unchanged(model, before)
    assert np.isfinite(exp.values).all()
    assert exp.values.shape[0] == x.shape[0]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("name", "modality"), _cases())
def test_method_cleans_up_when_model_raises(name: str, modality: str, train: bool) -> None:
    model, x, bg = _setup(modality)
    if modality == "image":
        model.features.insert(3, Raises())
    else:
        model.insert(2, Raises())
    model.train(train)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="boom"):
            _run(name, model, x, bg)
    assert_unchanged(model, before)
