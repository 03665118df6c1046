"""The audit's recourse part: refused people of the group the model penalises must change more."""

from __future__ import annotations

import json

import numpy as np

from unveil.audit import bias_audit
from unveil.audit.examples import credit_scorer, synthetic_credit


def test_recourse_costs_more_for_the_penalised_group(tmp_path):
    X, y, names = synthetic_credit(1200, seed=5)
    a = bias_audit(credit_scorer(), X, sensitive="gender", y=y, feature_names=names, n_explain=60, recourse=80,
                   class_names=["rejected", "approved"])
    r = a.recourse
    assert r is not None and r["n_rows"] == 80 and r["metrics"]["violations"] == 0
    g = r["by_group"]
    assert set(g) == {"0", "1"} and g["0"]["with_recourse"] == 1.0 and g["1"]["with_recourse"] == 1.0
    # the scorer subtracts 1 for gender = 1 and 0.8 per unit of its proxy: more to make up
    assert g["1"]["mean_cost"] > 1.2 * g["0"]["mean_cost"]
    assert all(t.startswith("Had ") and "gender" not in t.split(", the decision")[0] for t in r["examples"])
    html = a.to_html()
    assert 'data-testid="audit-recourse"' in html and "must change" in html
    saved = json.loads(a.save(tmp_path / "a.json").read_text())
    assert saved["recourse"]["by_group"]["1"]["rows"] == g["1"]["rows"]


def test_no_recourse_by_default():
    X, y, names = synthetic_credit(300, seed=5)
    a = bias_audit(credit_scorer(), X, sensitive="gender", feature_names=names, n_explain=20)
    assert a.recourse is None and 'data-testid="audit-recourse"' not in a.to_html()
    assert a.flip_rate is not None and np.isfinite(a.flip_rate)
