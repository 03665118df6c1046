"""Verdicts a person reads are defined and consistent: a sanity check is passed, failed or
undefined with its reason (never NaN); "faithful" is one rule whose answer agrees with the sign
of the margin shown beside it; a constant map is never faithful."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from unveil.metrics import sanity_check, trust_card


def _linear() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    return model, torch.randn(12, 8)


def test_sanity_is_undefined_when_the_original_maps_are_blank() -> None:
    model, x = _linear()
    res = sanity_check(model, x, method="saliency",
                       explain_fn=lambda m, xx, t: torch.zeros_like(xx))
    assert res.verdict == "undefined" and res.passed is False
    assert res.reason is not None and "constant" in res.reason and "all 12 inputs" in res.reason
    assert "UNDEFINED" in str(res) and "nan" not in str(res).split("why:")[1]


def test_sanity_is_undefined_when_every_randomised_map_is_blank() -> None:
    model, x = _linear()

    def explain(m: nn.Module, xx: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        same = all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                     model.state_dict().values()))
        return xx.abs() if same else torch.zeros_like(xx)

    res = sanity_check(model, x, method="saliency", explain_fn=explain)
    assert math.isnan(res.final)
    assert res.verdict == "undefined" and "after randomising" in (res.reason or "")


def test_sanity_failure_says_why_and_a_pass_has_no_excuse() -> None:
    model, x = _linear()
    same = sanity_check(model, x, method="saliency", explain_fn=lambda m, xx, t: xx.abs())
    assert same.verdict == "failed" and "hardly change" in (same.reason or "")
    real = sanity_check(model, x, method="saliency")
    assert real.verdict == ("passed" if real.passed else "failed")
    assert (real.reason is None) == real.passed


def _card(model: nn.Module, exp: uv.Explanation) -> dict:
    return trust_card(model, exp, checks=("faithful",)).verdicts["faithful"].__dict__


def test_faithful_answer_agrees_with_the_sign_of_its_margin() -> None:
    model, x = _linear()
    exp = uv.explain(model, x, method="integrated_gradients", n_steps=16)
    good = _card(model, exp)
    assert good["answer"] is True and good["figures"]["faithfulness_margin"] > 0
    flipped = uv.explain(model, x, method="integrated_gradients", n_steps=16)
    flipped.values = -flipped.values  # ranks the evidence last: worse than chance
    bad = _card(model, flipped)
    assert bad["answer"] is False and bad["figures"]["faithfulness_margin"] <= 0


def test_a_constant_map_is_never_faithful() -> None:
    model, x = _linear()
    exp = uv.explain(model, x, method="saliency")
    exp.values = np.zeros_like(exp.values)
    v = _card(model, exp)
    assert v["answer"] is False and v["figures"]["degenerate_samples"] == 12
    assert "constant map" in v["rule"]


def test_degenerate_rows_finds_blank_constant_and_non_finite_rows() -> None:
    from unveil.core.quality import degenerate_rows, mark_degenerate

    v = np.array([[0.0, 0, 0], [2, 2, 2], [1, np.nan, 0], [0, 1, 0]])
    assert degenerate_rows(v).tolist() == [True, True, True, False]
    model, x = _linear()
    exp = uv.explain(model, x[:2], method="saliency")
    exp.values[1] = 0.0
    mark_degenerate(exp, "gradient")
    d = exp.quality["degenerate"]
    assert d["rows"] == [1] and d["kind"] == "all zero" and "saturated" in d["reason"]
    exp.values[1] = 1.0 + exp.values[0]
    mark_degenerate(exp, "gradient")
    assert "degenerate" not in exp.quality


@pytest.mark.parametrize("family", ["cam", "gradient", "perturbation", "shapley", "lrp"])
def test_every_family_has_a_cause_in_words(family: str) -> None:
    from unveil.core.quality import degeneracy_reason

    text = degeneracy_reason("m", family, all_zero=True, layer="features.7")
    assert "try" in text and len(text) > 40


def test_trust_card_answers_unknown_with_the_reason_when_sanity_is_undefined() -> None:
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight[0] = 0.0  # class 0 ignores its inputs: flat saliency maps
    exp = uv.explain(model, torch.randn(6, 4), method="saliency", target=0)
    v = trust_card(model, exp, checks=("sanity",)).verdicts["sanity"]
    assert v.answer is None and v.word == "unknown"
    assert "constant" in v.figures["reason"]
