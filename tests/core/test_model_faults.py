"""A model that misbehaves gets one clear error from every method, never NaN explanations or a
raw exception; integer images are explained as images, not as token ids."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from _util import TinyCNN, mlp
from unveil.errors import ModelError, NonFiniteOutputError

SMALL = {"n_steps": 4, "n_samples": 32, "max_evals": 64, "n_iter": 2}


def _run(name: str, model: Any, x: torch.Tensor, bg: torch.Tensor) -> uv.Explanation:
    info = uv.core.get_method(name)
    init = {k: v for k, v in SMALL.items() if k in info.options.names("init")}
    call: dict[str, Any] = {}
    if "background" in info.options and not info.wraps:  # a wrapper's inner saliency takes none
        call["background"] = bg
    if info.takes_seed:
        call["seed"] = 0
    return info.cls(model, **init)(x, target="predicted", **call)  # type: ignore[no-any-return]


def _methods(modality: str) -> list[str]:
    return [m.name for m in uv.methods(modality) if m.family != "attention"]


class NaNRows(nn.Module):
    """An MLP whose scores are NaN for rows whose first feature is above 1 (log of a negative)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp(n_in=6, n_out=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = (x[:, :1] > 1.0).to(x.dtype)
        return self.net(x) + torch.log(1.0 - 2.0 * bad)


class Picky(nn.Module):
    """A model whose forward raises a KeyError (a missing column, as a real pipeline would)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp(n_in=6, n_out=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise KeyError("column 'income' not found")


def _rows() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(5, 6).clamp(-0.9, 0.9)
    x[2, 0] = 2.0  # row 2 makes the model return NaN
    return x, torch.randn(4, 6).clamp(-0.9, 0.9)


@pytest.mark.parametrize("name", _methods("tabular"))
def test_non_finite_scores_raise_model_error_naming_the_row(name: str) -> None:
    x, bg = _rows()
    with warnings.catch_warnings(), pytest.raises(NonFiniteOutputError, match=r"rows 2\b"):
        warnings.simplefilter("ignore")
        _run(name, NaNRows(), x, bg)


def test_non_finite_error_is_a_model_error_with_the_rows() -> None:
    x, _ = _rows()
    with pytest.raises(ModelError) as info:
        uv.explain(NaNRows().eval(), x, method="saliency")
    assert isinstance(info.value, NonFiniteOutputError)
    assert info.value.rows == [2] and info.value.total == 5


@pytest.mark.parametrize("name", _methods("tabular"))
def test_exceptions_of_the_model_become_model_errors(name: str) -> None:
    x, bg = _rows()
    with warnings.catch_warnings(), pytest.raises(ModelError, match="KeyError.*income") as info:
        warnings.simplefilter("ignore")
        _run(name, Picky(), x, bg)
    assert isinstance(info.value.__cause__, KeyError)  # chained: the original stays visible


def test_a_numpy_function_that_raises_is_a_model_error() -> None:
    def predict(a: np.ndarray) -> np.ndarray:
        raise ValueError("could not convert string to float: 'south'")

    with pytest.raises(ModelError, match="ValueError.*south"):
        uv.explain(predict, np.zeros((2, 3)), method="occlusion", baseline=0.0)


@pytest.mark.parametrize("name", _methods("image"))
def test_integer_images_are_cast_to_float_with_one_warning(name: str) -> None:
    torch.manual_seed(0)
    model = TinyCNN(in_ch=1).eval()
    xi = torch.randint(0, 255, (2, 1, 16, 16))
    bg = torch.rand(4, 1, 16, 16) * 255
    uv.core.model._WARNED.discard("integer_images")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp = _run(name, model, xi, bg)
    msgs = [str(w.message) for w in caught if "integers shaped like images" in str(w.message)]
    assert len(msgs) == 1
    assert exp.values.shape[0] == 2 and np.isfinite(exp.values).all()
    assert exp.modality == "image"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _run(name, model, xi.float(), bg)
    np.testing.assert_allclose(exp.values, ref.values, rtol=1e-4, atol=1e-5)


def test_integer_token_ids_stay_token_ids() -> None:
    emb = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(12, 2)).eval()
    ids = torch.randint(0, 20, (2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cast warning for (N, T) ids
        exp = uv.explain(emb, ids, method="integrated_gradients", layer="0", n_steps=4)
    assert exp.modality == "text"
