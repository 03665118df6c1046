"""Global importance: permutation importance vs scikit-learn, PD/ICE vs scikit-learn and closed
forms, mean |Shapley| vs the closed form of a linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.inspection import partial_dependence as sk_partial_dependence
from torch import nn

import unveil.surrogate as us
from _util import Raises, assert_unchanged, mlp, snapshot, training_warning
from unveil.errors import InputError, ModelError, OptionError


@pytest.fixture(scope="module")
def gbc() -> tuple[GradientBoostingClassifier, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 - 0.7 * X[:, 3] + 0.3 * rng.normal(size=400) > 0.4).astype(int)
    return GradientBoostingClassifier(n_estimators=30, max_depth=2, random_state=0).fit(X, y), X, y


def test_permutation_importance_agrees_with_scikit_learn(gbc):
    est, X, y = gbc
    ref = us.permutation_importance(est, X, y, n_repeats=40, seed=0)  # scikit-learn's engine
    own = us.permutation_importance(est, X, y, n_repeats=40, seed=1, engine="unveil")
    assert ref.baseline_score == pytest.approx(own.baseline_score, abs=1e-12)
    assert ref.importances.max() > 0.1  # non-trivial
    se = np.sqrt((ref.importances_std**2 + own.importances_std**2) / 40)
    assert np.all(np.abs(ref.importances - own.importances) <= 3 * se + 1e-3)
    assert [n for n, _ in own.ranking()[:2]] == [n for n, _ in ref.ranking()[:2]]


def test_unused_column_has_exactly_zero_importance():
    w = torch.tensor([1.0, 0.0, -2.0])
    net = lambda x: torch.stack([torch.zeros(len(x)), x @ w], 1)  # noqa: E731
    X = np.random.default_rng(0).normal(size=(300, 3))
    imp = us.permutation_importance(net, X, n_repeats=5)
    assert imp.score == "agreement" and imp.baseline_score == 1.0
    assert imp.importances[1] == 0.0 and np.all(imp.samples[1] == 0.0)
    assert imp.importances[2] > imp.importances[0] > 0.1
    # the drop equals a direct count for one repeat
    rng = np.random.default_rng(5)
    one = us.permutation_importance(net, X, n_repeats=1, features=[2], seed=5)
    perm = rng.permuted(np.tile(np.arange(300), (1, 1)), axis=1)[0]
    Xp = X.copy()
    Xp[:, 2] = X[perm, 2]
    base = net(torch.tensor(X, dtype=torch.float32)).argmax(1)
    shuf = net(torch.tensor(Xp, dtype=torch.float32)).argmax(1)
    assert one.importances[0] == pytest.approx(1.0 - (base == shuf).numpy().mean(), abs=1e-12)


def test_regression_permutation_importance_uses_r2():
    f = lambda x: 3 * x[:, 0] + x[:, 1]  # noqa: E731
    X = np.random.default_rng(0).normal(size=(500, 3))
    imp = us.permutation_importance(f, X, n_repeats=10)
    assert imp.score == "r2" and imp.baseline_score == pytest.approx(1.0)
    # shuffling an independent column of a linear model costs ~ 2 * its share of the variance
    assert imp.importances[0] == pytest.approx(2 * 9 / 10, rel=0.15)
    assert imp.importances[2] == 0.0


def test_partial_dependence_agrees_with_scikit_learn(gbc):
    est, X, _ = gbc
    ours = us.partial_dependence(est, X, [0, "x3"], target=1, grid_resolution=15)
    for pd, j in zip(ours, [0, 3]):
        ref = sk_partial_dependence(est, X, [j], grid_resolution=15, kind="both", method="brute")
        assert np.allclose(pd.grid, ref["grid_values"][0])
        assert np.allclose(pd.average, ref["average"][0], atol=1e-6)
        assert np.allclose(pd.individual, ref["individual"][0], atol=1e-6)
        assert np.ptp(pd.average) > 0.1  # non-trivial


def test_partial_dependence_of_an_additive_model():
    f = lambda x: torch.sin(x[:, 0]) + x[:, 1] ** 2  # noqa: E731
    X = np.random.default_rng(1).normal(size=(200, 2))
    grid = np.linspace(-2, 2, 9)
    (pd,) = us.partial_dependence(f, X, "x0", grid={"x0": grid})
    assert np.allclose(pd.average, np.sin(grid) + (X[:, 1] ** 2).mean(), atol=1e-5)
    c = pd.centered()
    assert np.allclose(c, c[:1], atol=1e-5)  # ICE curves of an additive model are parallel
    (few,) = us.partial_dependence(f, np.round(X), 1, grid_resolution=50)
    assert np.array_equal(few.grid, np.unique(np.round(X[:, 1])))  # few values: all of them


def test_partial_dependence_keeps_all_outputs_and_ignores_batch_size():
    net = mlp(4, 3).eval()
    X = np.random.default_rng(2).normal(size=(60, 4))
    (a,) = us.partial_dependence(net, X, 2, grid_resolution=7)
    (b,) = us.partial_dependence(net, X, 2, grid_resolution=7, batch_size=5)
    assert a.average.shape == (7, 3) and a.individual.shape == (60, 7, 3)
    assert np.allclose(a.individual, b.individual, atol=1e-6)


@pytest.mark.parametrize("method", ["exact_shapley", "kernel_shap"])
def test_shapley_importance_of_a_linear_model(method):
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    f = lambda x: x @ w  # noqa: E731
    X = np.random.default_rng(3).normal(size=(40, 5))
    bg = X[:20]
    imp = us.shapley_importance(f, X, method=method, background=bg, target=None)
    expected = np.abs(w.numpy() * (X - bg.mean(0))).mean(0)  # phi_j = w_j (x_j - E[x_j])
    assert np.allclose(imp.importances, expected, atol=1e-4)
    assert imp.ranking()[0][0] == "x4" and imp.importances[3] < 1e-6
    assert imp.shares()["x4"] == pytest.approx(expected[4] / expected.sum(), abs=1e-4)


def test_errors(gbc):
    est, X, y = gbc
    net = mlp(5, 2).eval()
    with pytest.raises(OptionError, match="no feature named"):
        us.partial_dependence(est, X, "nope")
    with pytest.raises(OptionError, match="out of range"):
        us.partial_dependence(est, X, 9)
    with pytest.raises(OptionError, match="target 5"):
        us.partial_dependence(net, X, 0, target=5)
    with pytest.raises(OptionError, match="engine='sklearn' needs"):
        us.permutation_importance(net, X, engine="sklearn")
    with pytest.raises(OptionError, match="n_repeats"):
        us.permutation_importance(net, X, n_repeats=0)
    with pytest.raises(InputError, match="one value per row"):
        us.permutation_importance(net, X, y[:10])
    with pytest.raises(InputError, match="one value per row"):
        us.permutation_importance(est, X, y[:10])
    with pytest.raises(OptionError, match="percentiles"):
        us.partial_dependence(net, X, 0, percentiles=(0.9, 0.1))


@pytest.mark.parametrize("train", [False, True])
def test_model_left_unchanged(train):
    net = mlp(4, 2)
    net.train(train)
    X = np.random.default_rng(0).normal(size=(50, 4))
    before = snapshot(net)
    with training_warning(train):
        us.permutation_importance(net, X, n_repeats=2)
    us.partial_dependence(net, X, 0, grid_resolution=5)  # one warning per model: said above
    assert_unchanged(net, before)
    broken = nn.Sequential(nn.Linear(4, 4), Raises())
    broken.train(train)
    before = snapshot(broken)
    with training_warning(train), pytest.raises((RuntimeError, ModelError), match="boom"):
        us.partial_dependence(broken, X, 0)
    assert_unchanged(broken, before)


def test_regressor_from_scikit_learn_uses_r2():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    est = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(X, X[:, 0] * 2)
    imp = us.permutation_importance(est, X, n_repeats=3)
    assert imp.score == "r2" and imp.ranking()[0][0] == "x0"


def test_importance_plot_draws_the_ranking(gbc):
    import matplotlib

    matplotlib.use("Agg")
    est, X, y = gbc
    gi = us.permutation_importance(est, X, y, n_repeats=5, seed=0)
    ax = gi.plot(top=3)
    bars = [p.get_width() for p in ax.patches]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    top3 = gi.ranking()[:3]
    assert labels == [n for n, _ in top3][::-1]  # the most important at the top
    np.testing.assert_allclose(bars, [v for _, v in top3][::-1])
    assert "accuracy" in ax.get_xlabel()
