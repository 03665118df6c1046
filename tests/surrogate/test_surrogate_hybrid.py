"""Hybrid model: coverage and accuracy of each part equal a direct count; it beats the surrogate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import unveil.surrogate as us
from _util import assert_unchanged, snapshot, training_warning
from unveil.core.model import Model
from unveil.errors import InputError, OptionError


@pytest.fixture(scope="module")
def cancer():
    from unveil.zoo import breast_cancer_mlp, load_dataset

    return breast_cancer_mlp(), load_dataset("breast_cancer_mlp")


def _rule_rows(sur: us.Surrogate, trusted: list[int], X: np.ndarray) -> np.ndarray:
    """Rows a trusted rule answers, counted from the rules' own conditions."""
    rules = sur.rules()
    masks = []
    for r in rules:
        m = np.ones(len(X), dtype=bool)
        for c in r.conditions:
            m &= (X[:, c.feature] <= c.threshold) if c.op == "<=" else (X[:, c.feature] > c.threshold)
        masks.append(m)
    if rules[-1].is_default:
        masks[-1] = ~np.any(masks[:-1], axis=0)
    return np.any([masks[k] for k in trusted], axis=0)


@pytest.mark.parametrize("kind", ["tree", "rules"])
def test_report_equals_a_direct_count(cancer, kind):
    net, data = cancer
    h = us.hybrid(net, data.X_train, y=data.y_train, kind=kind, max_depth=3, min_fidelity=0.9,
                  feature_names=data.feature_names, class_names=data.class_names)
    Xt, yt = data.X_test.numpy().astype(np.float64), data.y_test.numpy()
    rep = h.report(Xt, yt)
    cov = _rule_rows(h.surrogate, h.trusted, Xt)
    assert 0 < cov.sum() < len(Xt)  # non-trivial: both parts answer some rows
    with torch.no_grad():
        net_pred = net(data.X_test).argmax(1).numpy()
    sur_pred = h.surrogate.predict(Xt)
    hyb = np.where(cov, sur_pred, net_pred)
    assert rep.n_rule_rows == cov.sum() and rep.coverage == pytest.approx(cov.mean(), abs=1e-12)
    assert rep.rules_accuracy == pytest.approx((sur_pred[cov] == yt[cov]).mean(), abs=1e-12)
    assert rep.network_accuracy == pytest.approx((net_pred[~cov] == yt[~cov]).mean(), abs=1e-12)
    assert rep.accuracy == pytest.approx((hyb == yt).mean(), abs=1e-12)
    assert rep.surrogate_accuracy == pytest.approx((sur_pred == yt).mean(), abs=1e-12)
    assert rep.model_accuracy == pytest.approx((net_pred == yt).mean(), abs=1e-12)
    assert rep.rules_agreement == pytest.approx((sur_pred[cov] == net_pred[cov]).mean(), abs=1e-12)
    assert rep.accuracy >= rep.surrogate_accuracy
    assert sum(r["n_rows"] for r in rep.per_rule) == rep.n_rule_rows
    # every trusted rule met the bar on the surrogate's held-out rows
    for r in h.trusted_rules():
        assert r.fidelity >= 0.9 and r.n_covered >= 10
    assert "answered by rules" in str(rep)
    assert json.loads(json.dumps(rep.to_dict()))["n_rule_rows"] == rep.n_rule_rows


def test_network_runs_only_on_deferred_rows(cancer):
    net, data = cancer
    h = us.hybrid(net, data.X_train, max_depth=3, min_fidelity=0.9)
    counted = Model(net)
    h.surrogate.model = counted  # count the rows the hybrid sends to the network
    pred, src = h.predict(data.X_test, return_source=True)
    assert counted.n_evals == int((~src).sum()) == h.n_model_rows
    assert src.any() and (~src).any()


def test_hybrid_beats_its_surrogate_where_rules_are_unfaithful():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 3))

    def net(a):  # a simple region (x0 > 0.5) and an intricate one
        s = np.where(a[:, 0] > 0.5, 1.0, np.sin(4 * a[:, 1]) * np.cos(3 * a[:, 2]))
        return np.stack([-s, s], 1)

    y = np.asarray(net(X)).argmax(1)
    h = us.hybrid(Model(net, backend="numpy"), X[:3000], y=y[:3000], kind="tree", max_depth=3)
    rep = h.report(X[3000:], y[3000:])
    assert rep.coverage > 0.2 and rep.rules_accuracy > 0.95
    assert rep.accuracy > rep.surrogate_accuracy + 0.05


def test_errors_and_model_unchanged(cancer):
    net, data = cancer
    with pytest.raises(OptionError, match="classification surrogate of kind 'tree' or 'rules'"):
        us.hybrid(net, data.X_train, kind="linear")
    with pytest.raises(OptionError, match="classification surrogate"):
        us.hybrid(lambda x: x[:, 0], data.X_train)  # a regression surrogate
    with pytest.raises(OptionError, match="min_fidelity"):
        us.hybrid(net, data.X_train, min_fidelity=1.5)
    h = us.hybrid(net, data.X_train, max_depth=2)
    with pytest.raises(InputError, match="one value per row"):
        h.report(data.X_test, data.y_test[:5])
    net.train()
    before = snapshot(net)
    with training_warning(True):
        h = us.hybrid(net, data.X_train, max_depth=2)
    h.report(data.X_test, data.y_test)  # one warning per model: said above
    assert_unchanged(net, before)
    net.eval()


def test_confidence_trusts_rules_by_their_wilson_lower_bound():
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 4))

    def box(a):  # a boundary a depth-3 tree can only approximate: rules of mixed fidelity
        s = a[:, 0] + 0.6 * a[:, 1] * a[:, 2]
        return np.stack([-s, s], axis=1)

    sur = us.distill(box, X, kind="tree", max_depth=3, min_samples_leaf=5)
    plain = us.HybridModel(sur, min_fidelity=0.9, min_support=5)
    strict = us.HybridModel(sur, min_fidelity=0.9, min_support=5, confidence=0.95)
    for r, bound in zip(sur.rules(), strict.fidelity_bounds):
        if r.fidelity is None:
            assert bound is None
            continue
        k = round(r.fidelity * r.n_covered)
        low, _ = proportion_confint(k, r.n_covered, alpha=0.10, method="wilson")  # one-sided 95%
        assert bound == pytest.approx(low, abs=1e-12)
    assert set(strict.trusted) < set(plain.trusted)  # some rule passes on its point estimate only
    with pytest.raises(OptionError, match="confidence"):
        us.HybridModel(sur, confidence=1.0)
