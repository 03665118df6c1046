"""The built-in evaluation on scikit-learn digits: leave-one-out with actual retraining,
mislabel detection by self-influence, and the LDS ordering of good and random scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _da_problems import digits, logistic_problem
from torch import nn

from unveil.data_attribution import training_influence
from unveil.data_attribution.evaluation import (
    Retrainer,
    auc,
    evaluate_attribution,
    lds,
    loo_correlation,
    mislabel_auc,
    spearman,
)
from unveil.errors import OptionError

L2 = 1e-2


@pytest.fixture(scope="module")
def digits_fit():
    x, y, xt, yt = digits(n_train=500, n_test=20)
    torch.manual_seed(0)
    model = nn.Linear(64, 10).double().eval()
    r = Retrainer(model, (x, y), xt, yt, params="all", l2=L2)
    return r, r.fitted_model(), (x, y, xt, yt)


def test_retrainer_reaches_the_gradient_tolerance(digits_fit) -> None:
    r, model, (x, y, _, _) = digits_fit
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y) + 0.5 * L2 * sum((p ** 2).sum() for p in model.parameters())
    loss.backward()
    assert float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()) < 1e-8
    model.zero_grad(set_to_none=True)
    w = np.ones(len(x))
    w[3] = 0
    theta = r.fit(w)
    assert float(r.gradient(theta, torch.as_tensor(w)).norm()) < 1e-8


def test_leave_one_out_correlation_on_digits(digits_fit) -> None:
    """Koh & Liang's check: 100 rows left out one at a time, the logistic model retrained to
    |grad| < 1e-8 warm-started; Pearson(predicted, actual change of 20 test losses) >= 0.8."""
    r, model, (x, y, xt, yt) = digits_fit
    res = training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0)
    evaluate_attribution(res, r, loo_rows=100)
    assert res.evaluation["loo_rows"] == 100
    assert res.evaluation["loo_correlation"] >= 0.8, res.evaluation
    assert "loo" in res.timings


def test_mislabel_detection_on_digits(digits_fit) -> None:
    """5% of the labels flipped, the model retrained on them: explicit self-influence finds the
    flipped rows with ROC AUC >= 0.9."""
    _, model, (x, y, _, _) = digits_fit
    out = mislabel_auc(model, (x, y), share=0.05, params="all", l2=L2, damping=0.0)
    assert len(out["flipped"]) == 25
    assert out["mislabel_auc"] >= 0.9, out["mislabel_auc"]


def test_lds_orders_influence_above_noise() -> None:
    """On random half-subsets the influence scores' LDS is high and beats random scores'."""
    model, x, y, xt, yt = logistic_problem(n=60, d=4, classes=3, seed=1, n_test=6)
    r = Retrainer(model, (x, y), xt, yt, params="all", l2=0.05)
    fitted = r.fitted_model()
    res = training_influence(fitted, (x, y), xt, yt, l2=0.05, damping=0.0)
    good = lds(res, r, subsets=20, seed=0)["lds"]
    noise = lds(torch.randn(res.scores.shape, generator=torch.Generator().manual_seed(0)), r, subsets=20)["lds"]
    assert good > 0.5 and good > noise + 0.3, (good, noise)


def test_statistics_agree_with_scipy_and_sklearn() -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    pos = rng.random(40) < 0.3
    assert auc(a, pos) == pytest.approx(roc_auc_score(pos, a), abs=1e-12)


def test_loo_with_a_user_retrain_function() -> None:
    """Any callable weights -> test losses plugs into the same mechanism."""
    model, x, y, xt, yt = logistic_problem()
    r = Retrainer(model, (x, y), xt, yt, params="all", l2=0.05)
    calls: list[np.ndarray] = []

    def retrain(w: np.ndarray) -> np.ndarray:
        calls.append(w)
        return r(w)

    res = training_influence(r.fitted_model(), (x, y), xt, yt, l2=0.05, damping=0.0)
    out = loo_correlation(res, retrain, rows=[0, 1, 2, 3, 4])
    assert len(calls) == 6 and out["loo_correlation"] > 0.9  # the base plus five rows


def test_training_influence_measures_itself_when_asked() -> None:
    """evaluate=[...] fills result.evaluation with the figures and says them in the HTML."""
    model, x, y, xt, yt = logistic_problem(n=50, d=4, classes=3, seed=2, n_test=3)
    fitted = Retrainer(model, (x, y), xt, yt, params="all", l2=0.05).fitted_model()
    res = training_influence(fitted, (x, y), xt, yt, l2=0.05, params="all", evaluate=["loo", "lds", "mislabel"],
                             loo_rows=10, lds_subsets=8)
    ev = res.evaluation
    assert ev["base_gradient_norm"] < 1e-8 and ev["loo_rows"] == 10
    assert ev["loo_correlation"] > 0.9 and ev["lds"] > 0.3 and 0 <= ev["mislabel_auc"] <= 1
    assert "Linear datamodeling score" in res._repr_html_()
    with pytest.raises(OptionError, match="evaluate must be"):
        training_influence(fitted, (x, y), xt, yt, evaluate=["lso"])
