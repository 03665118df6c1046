"""A scikit-learn classifier fitted on a DataFrame with its own labels ("no"/"yes"): every tool
takes those labels, names classes after them, and calls the estimator without warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import unveil.surrogate as us
from unveil.audit import bias_audit
from unveil.audit._fairness import group_label
from unveil.errors import InputError, OptionError


@pytest.fixture(scope="module")
def labelled() -> tuple[LogisticRegression, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(1200, 4)), columns=["income", "debt", "age", "group"])
    X["group"] = (rng.random(1200) < 0.5).astype(float)
    logit = 1.5 * X["income"] - 1.0 * X["debt"] + 0.3 * rng.normal(size=1200)
    y = np.where(logit > 0, "yes", "no")
    noisy = rng.random(1200) < 0.1
    y[noisy] = np.where(y[noisy] == "yes", "no", "yes")
    return LogisticRegression().fit(X, y), X, y


@pytest.fixture(autouse=True)
def _no_feature_name_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names.*")
        yield


def test_distill_accuracy_uses_the_estimators_labels(labelled):
    est, X, y = labelled
    sur = us.distill(est, X.iloc[:800], y=y[:800], X_val=X.iloc[800:], y_val=y[800:], kind="rules")
    assert sur.class_names == ["no", "yes"]
    pred = np.asarray(sur.class_names)[sur.predict(X.iloc[800:])]
    assert sur.held_out["accuracy"] == pytest.approx(float((pred == y[800:]).mean()))
    assert sur.held_out["model_accuracy"] == pytest.approx(float((est.predict(X.iloc[800:]) == y[800:]).mean()))
    assert sur.held_out["model_accuracy"] > 0.8  # labels were matched, not compared as strings to indices
    assert "THEN yes" in str(sur.rules()) or "ELSE yes" in str(sur.rules())
    assert sur.accuracy(X.iloc[800:], y[800:]) == pytest.approx(sur.held_out["accuracy"])


def test_hybrid_report_and_permutation_importance_take_labels(labelled):
    est, X, y = labelled
    h = us.hybrid(est, X.iloc[:800], y=y[:800], min_fidelity=0.9)
    rep = h.report(X.iloc[800:], y[800:])
    assert rep.model_accuracy == pytest.approx(float((est.predict(X.iloc[800:]) == y[800:]).mean()))
    gi = us.permutation_importance(est, X, y, engine="unveil", n_repeats=3)
    assert gi.baseline_score == pytest.approx(est.score(X, y))
    assert gi.ranking()[0][0] == "income"


def test_local_surrogate_names_the_class_and_the_columns(labelled):
    est, X, _ = labelled
    loc = us.local_surrogate(est, X.iloc[3], X=X)
    assert loc.feature_names == list(X.columns)
    assert loc.target_name == est.predict(X.iloc[[3]])[0]  # "predicted": the estimator's own label
    assert f"({loc.target_name})" in str(loc)


def test_unknown_labels_and_positive_class(labelled):
    est, X, y = labelled
    with pytest.raises(InputError, match=r"labels \['maybe'\].*classes are \['no', 'yes'\]"):
        us.distill(est, X, y=np.where(y == "yes", "maybe", y))
    audit = bias_audit(est, X, sensitive="group", y=y, positive="yes", attribution="permutation")
    direct = est.predict(X)[X["group"].to_numpy() == 1] == "yes"
    assert audit.group_metrics[group_label(1.0)]["selection_rate"] == pytest.approx(float(direct.mean()))
    with pytest.raises(InputError, match="does not know"):
        bias_audit(est, X, sensitive="group", positive="approved")


def test_positive_index_out_of_range_is_refused():
    from torch import nn

    net = nn.Linear(3, 2).eval()
    with pytest.raises(OptionError, match="positive=4"):
        bias_audit(net, np.random.default_rng(0).normal(size=(50, 3)), sensitive=np.arange(50) % 2, positive=4)
