"""Rows the model has not seen are flagged, with the offending features named, instead of being
explained with confidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from unveil.core.reference import Reference, describe_outside
from unveil.errors import InputError


def _data() -> tuple[nn.Module, torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(200, 4, generator=g) * torch.tensor([1.0, 10.0, 0.1, 5.0]) + 50
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    return model, rows, ["age", "income", "ratio", "tenure"]


def test_rows_in_other_units_are_flagged_with_their_features() -> None:
    model, rows, names = _data()
    wrapped = uv.Model(model, reference=rows, feature_names=names)
    x = rows[:3].clone()
    x[1, 1] = rows[:, 1].max() + 10 * (rows[:, 1].max() - rows[:, 1].min())  # far above income
    x[2] = (x[2] - rows.mean(0)) / rows.std(0)  # standardised: every column far below
    exp = uv.explain(wrapped, x, method="saliency")
    v = exp.quality["in_distribution"]
    assert v["ok"] == [True, False, False] and v["rows_outside"] == [1, 2]
    assert [f["feature"] for f in v["outside"]["1"]] == ["income"]
    assert v["outside"]["1"][0]["high"] == pytest.approx(float(rows[:, 1].max()))
    assert len(v["outside"]["2"]) == 4
    text = describe_outside(v, 1)
    assert text is not None and "income" in text and "units" in text
    assert describe_outside(v, 0) is None
    assert exp.feature_names == names  # the model's names reach the explanation


def test_the_margin_is_a_share_of_each_range() -> None:
    ref = Reference(np.array([[0.0, 10.0], [1.0, 20.0]]), margin=0.1)
    res = ref.check(np.array([[1.09, 21.0], [1.11, 10.0], [-0.05, 8.9]]))
    assert res["ok"] == [True, False, False]
    assert [f["feature"] for f in res["outside"]["2"]] == ["feature 1"]  # 8.9 < 10 - 1


def test_background_rows_serve_as_the_data_when_there_are_enough() -> None:
    model, rows, _ = _data()
    far = rows[:2] * 100
    exp = uv.explain(model, far, method="kernel_shap", background=rows[:50], n_samples=64, seed=0)
    assert exp.quality["in_distribution"]["rows_outside"] == [0, 1]
    few = uv.explain(model, far, method="kernel_shap", background=rows[:5], n_samples=64, seed=0)
    assert "in_distribution" not in few.quality  # 5 rows say little about the data's range


def test_images_are_checked_per_channel() -> None:
    ref = Reference(torch.rand(20, 3, 8, 8))
    x = torch.rand(2, 3, 8, 8)
    x[1, 2] *= 255  # one channel in 0..255
    res = ref.check(x)
    assert res["ok"] == [True, False]
    assert res["outside"]["1"][0]["feature"] == "channel 2" and res["outside"]["1"][0]["pixels"] > 0


def test_bad_reference_rows_are_refused() -> None:
    with pytest.raises(InputError, match="at least 2 rows"):
        Reference(np.zeros((1, 3)))
    with pytest.raises(InputError, match="NaN"):
        Reference(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(InputError, match="cannot be compared"):
        Reference(np.zeros((3, 2))).check(np.zeros((1, 3)))


def test_degenerate_maps_are_marked_on_the_explanation() -> None:
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[0].weight[0] = 0.0  # class 0 ignores every input: a flat saliency map
    exp = uv.explain(model, torch.randn(2, 3), method="saliency", target=0)
    d = exp.quality["degenerate"]
    assert d["rows"] == [0, 1] and d["kind"] == "all zero" and "gradient" in d["reason"]
    ok = uv.explain(model, torch.randn(2, 3), method="saliency", target=1)
    assert "degenerate" not in ok.quality


TABLE_METHODS = ["occlusion", "feature_ablation", "kernel_shap", "permutation_shapley",
                 "exact_shapley", "lime"]


@pytest.mark.parametrize("name", TABLE_METHODS)
def test_one_default_for_perturbation_and_shapley_methods_on_tables(name: str) -> None:
    """Without background= or baseline=, every perturbation and Shapley method refuses a table
    with the same hint — unless the model knows its data, which then stands for 'absent'."""
    model, rows, names = _data()
    x = rows[:2]
    opts = {"n_samples": 64, "seed": 0} if name in ("kernel_shap", "permutation_shapley", "lime") else {}
    with pytest.raises(uv.errors.BaselineError, match="needs the values that stand for an absent "
                       r"feature: pass background=.*uv.Model\(model, reference=X_train\)"):
        uv.explain(model, x, method=name, **opts)
    known = uv.Model(model, reference=rows, feature_names=names)
    got = uv.explain(known, x, method=name, **opts)
    ref = known.reference
    assert ref is not None
    same = uv.explain(model, x, method=name, background=ref.background(x), **opts)
    np.testing.assert_allclose(got.values, same.values, rtol=1e-5, atol=1e-6)
    assert np.abs(got.values).max() > 0  # not a trivial case
