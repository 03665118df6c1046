"""The report's "What would change the decision" part for table classifiers: counterfactuals of
the explained rows (checked against the model), an anchor whose coverage is the share of data
rows meeting it, honest words when nothing is found or the part cannot be made."""

from __future__ import annotations

from html import unescape

import numpy as np
import pytest
import torch

import unveil as uv


def _linear(seed: int = 0, f: int = 4, k: int = 2) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Linear(f, k).eval()
    with torch.no_grad():
        net.weight.copy_(torch.randn(k, f, generator=g))
        net.bias.zero_()
    data = torch.randn(200, f, generator=g)
    return net, data[:6], data


def test_table_report_shows_counterfactuals_that_flip_the_model_and_an_anchor() -> None:
    net, x, data = _linear()
    names = ["income", "debt", "age", "term"]
    rep = uv.report(net, x, ["saliency"], data=data, feature_names=names, class_names=["rejected", "approved"],
                    recourse={"constraints": {"immutable": ["age"]}}, evaluate=False)
    s = rep.sections[0]
    cf = s.counterfactuals
    assert cf is not None and len(cf) == 6 and cf.found.all()
    with torch.no_grad():
        before = net(x).argmax(1).numpy()
        for i in range(6):
            for k in np.flatnonzero(cf.valid[i]):
                z = torch.as_tensor(cf.rows[i, k], dtype=torch.float32)[None]
                assert int(net(z).argmax(1)) != before[i]  # the model itself gives the other class
                assert cf.rows[i, k, 2] == x[i, 2].item()  # age is immutable
    (a,) = s.anchors
    assert a.coverage == pytest.approx(float(a.holds(data.numpy().astype(np.float64)).mean()))
    html = rep.html
    assert "What would change the decision" in html
    assert html.count('data-testid="recourse-sentence"') == 6
    assert "\u201capproved\u201d instead of \u201crejected\u201d" in html or "\u201crejected\u201d instead of" in html
    assert 'data-testid="anchor-sentence"' in html and "coverage" in html


def test_infeasible_constraints_are_said_with_the_closest() -> None:
    net, x, data = _linear(1)
    rep = uv.report(net, x[:2], ["saliency"], data=data, evaluate=False,
                    recourse={"constraints": {"immutable": [0, 1, 2], "ranges": {3: (-0.01, 0.01)}},
                              "anchor": False})
    cf = rep.sections[0].counterfactuals
    assert not cf.found.any()  # nothing the model reads may move beyond a sliver
    html = unescape(rep.html)
    assert html.count("No change within these constraints makes the decision") == 2
    assert "0 of 2 rows have a change within the constraints" in html
    for i in range(2):
        assert cf.status(i) == "no counterfactual within these constraints"
        assert np.all(cf.closest[i, :3] == x[i, :3].numpy().astype(np.float64))  # the closest keeps them too


def test_when_the_part_cannot_be_made_the_page_says_why_only_if_asked() -> None:
    net3, x, data = _linear(2, k=3)
    auto = uv.report(net3, x, ["saliency"], data=data, evaluate=False)
    assert auto.sections[0].counterfactuals is None and "What would change the decision" not in auto.html
    asked = uv.report(net3, x, ["saliency"], data=data, evaluate=False, recourse=True)
    assert "the model has 3 classes: pass recourse={'desired': CLASS}" in unescape(asked.html)
    given = uv.report(net3, x, ["saliency"], data=data, evaluate=False, recourse={"desired": 2, "anchor": False})
    cf = given.sections[0].counterfactuals
    assert cf is not None and (cf.desired == 2).all()
    net, x2, _ = _linear(3)
    no_data = uv.report(net, x2, ["saliency"], evaluate=False, recourse=True)
    assert "needs the model's data (data=)" in unescape(no_data.html)
    off = uv.report(net, x2, ["saliency"], data=data, evaluate=False, recourse=False)
    assert off.sections[0].counterfactuals is None and "What would change the decision" not in off.html


def test_a_failing_search_is_a_note_not_a_broken_report() -> None:
    net, x, data = _linear(4)
    rep = uv.report(net, x, ["saliency"], data=data, evaluate=False, on_error="record",
                    recourse={"constraints": {"immutable": ["nope"]}})
    assert "No counterfactuals: immutable: no column named 'nope'" in unescape(rep.html)
    with pytest.raises(uv.errors.OptionError, match="no column named 'nope'"):
        uv.report(net, x, ["saliency"], data=data, evaluate=False, recourse={"constraints": {"immutable": ["nope"]}})
