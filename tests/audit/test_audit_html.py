"""The audit page: self-contained, the verdict and every figure beside its threshold, and plain
sentences that match the figures."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from report._check import check_self_contained
from unveil.audit import bias_audit
from unveil.audit.examples import credit_scorer, synthetic_credit
from unveil.errors import OptionError


@pytest.fixture(scope="module")
def pages():
    X, y, names = synthetic_credit(800, seed=1)
    kw: dict[str, Any] = {"sensitive": "gender", "y": y, "feature_names": names, "n_explain": 100}
    biased = bias_audit(credit_scorer(), X, **kw)
    fair = bias_audit(credit_scorer(gender_weight=0.0, zip_weight=0.0), X, **kw)
    return biased, fair


def test_page_states_the_verdict_and_each_figure(pages, tmp_path):
    biased, _ = pages
    path = biased.save(tmp_path / "audit.html")
    page = path.read_text(encoding="utf-8")
    check_self_contained(page)
    assert re.search(r"Verdict: <span[^>]*>FAIL<", page)
    for flag in biased.flags:
        assert f"{flag.value:.3f}" in page
    flips = f"{100 * biased.flip_rate:.1f}%"
    assert f"changes the decision in {flips} of cases" in page
    assert "&#x27;zip_area&#x27;, which reveals" in page or "'zip_area', which reveals" in page
    for m in biased.group_metrics.values():
        assert f"<td>{int(m['count'])}</td>" in page and f"{m['selection_rate']:.3f}" in page


def test_fair_model_page_reassures_and_json_round_trips(pages, tmp_path):
    biased, fair = pages
    assert fair.verdict == "pass"  # equal base rates, and the scorer ignores gender and zip_area
    page = fair.to_html()
    check_self_contained(page)
    assert "changes the decision" not in page and "which reveal" not in page
    assert "do not depend on" in page and re.search(r"Verdict: <span[^>]*>PASS<", page)
    data = json.loads(biased.save(tmp_path / "audit.json").read_text())
    assert data["verdict"] == biased.verdict and data["flip_rate"] == pytest.approx(biased.flip_rate)
    with pytest.raises(OptionError, match=r"\.html or \.json"):
        biased.save(tmp_path / "audit.pdf")


def test_page_names_the_decision_and_the_groups(tmp_path):
    X, y, names = synthetic_credit(400, seed=2)
    a = bias_audit(credit_scorer(), X, sensitive="gender", y=y, feature_names=names, n_explain=60,
                   class_names=["rejected", "approved"], group_names={0: "men", 1: "women"})
    assert a.decision == "approved" and a.group_name("1") == "women (gender = 1)"
    page = a.to_html()
    check_self_contained(page)
    facts = re.search(r'data-testid="audit-facts">(.*?)</p>', page).group(1)
    assert "men (gender = 0); women (gender = 1)" in facts
    assert "the favourable decision audited: <b>approved</b>" in facts
    assert "class 1" not in page and "(no class names given)" not in page
    assert "<td>women (gender = 1)</td>" in page and "decision \u201capproved\u201d" in page
    if "disparity" in {f.kind for f in a.flags}:
        assert "receives the decision \u201capproved\u201d" in page
    gloss = re.search(r'data-testid="glossary">(.*?)</details>', page, re.S).group(1)
    assert "<dt>demographic parity difference</dt>" in gloss and "<dt>counterfactual flip rate</dt>" in gloss
    assert "deletion AUC" not in gloss
    assert json.loads(a.save(tmp_path / "a.json").read_text())["class_names"] == ["rejected", "approved"]
    # without names: said once, not silently
    plain = bias_audit(credit_scorer(), X, sensitive="gender", y=y, feature_names=names, n_explain=60)
    p2 = plain.to_html()
    assert p2.count("class 1 (no class names given)") == 1 and "gender = 0; gender = 1" in p2
