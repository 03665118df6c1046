"""Bias audit: flags a model that uses a protected attribute and its proxy, not one that ignores
them; group metrics and flip rates equal direct counts."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from _util import Raises, assert_unchanged, snapshot, training_warning
from unveil.audit import AuditThresholds, bias_audit
from unveil.audit.examples import credit_scorer, synthetic_credit
from unveil.errors import InputError, MissingExtraError, ModelError, OptionError

G, Z = 4, 5  # columns of gender and zip_area


@pytest.fixture(scope="module")
def credit():
    return synthetic_credit(1500, seed=0)


@pytest.fixture(scope="module")
def audits(credit):
    X, y, names = credit
    biased = bias_audit(credit_scorer(), X, sensitive="gender", y=y, feature_names=names, n_explain=150)
    fair = bias_audit(credit_scorer(gender_weight=0.0, zip_weight=0.0), X, sensitive="gender", y=y,
                      feature_names=names, n_explain=150)
    return biased, fair


def test_data_has_equal_base_rates_and_a_proxy(credit):
    X, y, _ = credit
    g = X[:, G]
    assert abs(y[g == 0].mean() - y[g == 1].mean()) < 0.04
    assert np.corrcoef(X[:, Z], g)[0, 1] > 0.5


def test_biased_model_is_flagged_on_attribute_and_proxy(audits):
    biased, _ = audits
    th = biased.thresholds
    assert biased.sensitive_share >= th.attribution_share
    assert biased.flip_rate >= th.flip_rate
    zip_info = next(p for p in biased.proxies if p.feature == "zip_area")
    assert zip_info.is_proxy and zip_info.auc >= th.proxy_auc
    assert zip_info.attribution_share >= th.attribution_share
    assert set(biased.flagged_features) == {"gender", "zip_area"}
    assert {f.kind for f in biased.flags} >= {"sensitive", "proxy", "disparity"}
    assert biased.verdict == "fail"
    assert biased.flip_rate_with_proxies > biased.flip_rate  # moving the proxy flips more
    text = biased.summary()
    assert "FAIL" in text and "gender" in text and "zip_area" in text
    back = json.loads(json.dumps(biased.to_dict()))
    assert back["flagged_features"] == ["gender", "zip_area"] and back["thresholds"]["flip_rate"] == 0.02


def test_model_ignoring_them_is_not_flagged(audits):
    _, fair = audits
    assert fair.flagged_features == [] and fair.verdict == "pass"
    assert fair.sensitive_share < 1e-6
    zip_info = next(p for p in fair.proxies if p.feature == "zip_area")
    assert zip_info.is_proxy and zip_info.attribution_share < 1e-6  # a proxy in the data, unused
    assert fair.flip_rate == 0.0 and fair.flip_rate_with_proxies == 0.0
    assert fair.demographic_parity_difference < fair.thresholds.parity_difference
    assert not any(p.is_proxy for p in fair.proxies if p.feature != "zip_area")


def test_group_metrics_equal_direct_counts(credit, audits):
    X, y, _ = credit
    biased, _ = audits
    with torch.no_grad():
        pred = credit_scorer()(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy()
    g = X[:, G]
    tpr, fpr, sel = {}, {}, {}
    for v, key in ((0.0, "0"), (1.0, "1")):
        m = biased.group_metrics[key]
        s = g == v
        sel[key] = (pred[s] == 1).mean()
        tpr[key] = (pred[s & (y == 1)] == 1).mean()
        fpr[key] = (pred[s & (y == 0)] == 1).mean()
        assert m["count"] == s.sum()
        assert m["selection_rate"] == pytest.approx(sel[key], abs=1e-12)
        assert m["true_positive_rate"] == pytest.approx(tpr[key], abs=1e-12)
        assert m["false_positive_rate"] == pytest.approx(fpr[key], abs=1e-12)
        assert m["base_rate"] == pytest.approx(y[s].mean(), abs=1e-12)
        assert m["accuracy"] == pytest.approx((pred[s] == y[s]).mean(), abs=1e-12)
    assert biased.demographic_parity_difference == pytest.approx(abs(sel["0"] - sel["1"]), abs=1e-12)
    eo = max(abs(tpr["0"] - tpr["1"]), abs(fpr["0"] - fpr["1"]))
    assert biased.equalized_odds_difference == pytest.approx(eo, abs=1e-12)


def test_flip_rate_equals_direct_count(credit, audits):
    X, _, _ = credit
    biased, _ = audits
    net = credit_scorer()
    Xf = X.copy()
    Xf[:, G] = 1 - Xf[:, G]
    with torch.no_grad():
        a = net(torch.tensor(X, dtype=torch.float32)).argmax(1)
        b = net(torch.tensor(Xf, dtype=torch.float32)).argmax(1)
    assert biased.flip_rate == pytest.approx((a != b).float().mean().item(), abs=1e-6)


def test_quantile_map_moves_a_group_onto_the_other():
    from unveil.audit._counterfactual import quantile_map

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 4000), rng.normal(3, 2, 4000)
    moved = quantile_map(a, a, b)
    assert moved.mean() == pytest.approx(3, abs=0.1) and moved.std() == pytest.approx(2, abs=0.1)
    assert np.all(np.diff(moved[np.argsort(a)]) >= 0)  # order within the group is kept


def test_external_attribute_multigroup_and_permutation(credit):
    X, y, names = credit
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 3, len(X))  # an attribute that is not an input
    a = bias_audit(credit_scorer(), X, sensitive=groups, feature_names=names,
                   sensitive_name="region", attribution="permutation")
    assert a.sensitive == "region" and a.groups == ["0", "1", "2"]
    assert a.flip_rate is None and a.sensitive_share is None and a.equalized_odds_difference is None
    assert a.attribution_method == "permutation"
    assert a.to_dict()["verdict"] == a.verdict
    assert not any(p.is_proxy for p in a.proxies)  # random groups have no proxy
    assert a.reconstruction_auc < 0.6


def test_custom_thresholds_and_given_attributions(credit):
    X, y, names = credit
    att = np.zeros((10, 6))
    att[:, 0] = 1.0
    a = bias_audit(credit_scorer(), X, sensitive=G, feature_names=names, attribution=att,
                   thresholds=AuditThresholds(flip_rate=0.99, parity_difference=0.99))
    assert a.sensitive_share == 0.0 and a.flags == [] and a.verdict == "pass"
    assert a.thresholds.flip_rate == 0.99


def test_errors(credit, monkeypatch):
    X, y, names = credit
    net = credit_scorer()
    with pytest.raises(InputError, match="2 to 20 groups"):
        bias_audit(net, X, sensitive="income", feature_names=names)
    with pytest.raises(OptionError, match="no feature named"):
        bias_audit(net, X, sensitive="sex", feature_names=names)
    with pytest.raises(InputError, match="one value per row"):
        bias_audit(net, X, sensitive=np.zeros(5))
    with pytest.raises(InputError, match="one value per row"):
        bias_audit(net, X, sensitive=G, y=y[:3])
    with pytest.raises(OptionError, match="attribution must be"):
        bias_audit(net, X, sensitive=G, attribution="lime")
    with pytest.raises(OptionError, match="threshold="):
        bias_audit(lambda x: x[:, 0], X, sensitive=G)
    monkeypatch.setitem(sys.modules, "fairlearn.metrics", None)
    with pytest.raises(MissingExtraError, match=r"unveil\[audit\]"):
        bias_audit(net, X, sensitive=G)


@pytest.mark.parametrize("train", [False, True])
def test_model_left_unchanged(credit, train):
    X, y, names = credit
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    net.train(train)
    before = snapshot(net)
    with training_warning(train):
        bias_audit(net, X[:300], sensitive=G, attribution="permutation")
    assert_unchanged(net, before)
    broken = nn.Sequential(nn.Linear(6, 2), Raises())
    broken.train(train)
    before = snapshot(broken)
    with training_warning(train), pytest.raises((RuntimeError, ModelError), match="boom"):
        bias_audit(broken, X[:300], sensitive=G)
    assert_unchanged(broken, before)


def test_preprocess_audits_in_the_tables_own_units(credit):
    """A scorer that takes standardised columns, audited on raw rows through ``preprocess``:
    the figures of the audit on standardised rows, with groups named by their raw values."""
    X, y, names = credit
    mean, std = X.mean(0), X.std(0)
    net = credit_scorer()

    def scorer_of_z(z):  # the same decisions, computed from standardised columns
        return net(torch.as_tensor(z * std + mean, dtype=torch.float32))

    kw = {"sensitive": "gender", "y": y, "feature_names": names, "attribution": "permutation"}
    on_z = bias_audit(scorer_of_z, (X - mean) / std, **kw)
    on_raw = bias_audit(scorer_of_z, X, preprocess=lambda r: (r - mean) / std, **kw)
    assert on_raw.groups == ["0", "1"] and on_z.groups != ["0", "1"]
    assert on_raw.flip_rate == on_z.flip_rate and on_raw.verdict == on_z.verdict == "fail"
    assert [m["selection_rate"] for m in on_raw.group_metrics.values()] == pytest.approx(
        [m["selection_rate"] for m in on_z.group_metrics.values()])
    assert on_raw.flagged_features == on_z.flagged_features == ["gender", "zip_area"]
