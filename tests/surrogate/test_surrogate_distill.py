"""Global surrogates: recovery of a tree black box, held-out fidelity, rule figures by direct count."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from torch import nn

import unveil.surrogate as us
from _util import Raises, assert_unchanged, mlp, snapshot, training_warning
from unveil.core.model import Model
from unveil.errors import InputError, ModelError, OptionError


def _data(n: int = 3000, f: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, f))


@pytest.fixture(scope="module")
def tree_box() -> tuple[DecisionTreeClassifier, np.ndarray]:
    """A black box that is itself a depth-3 tree, on three classes."""
    X = _data()
    rng = np.random.default_rng(1)
    y = np.where(X[:, 0] > 0.3, 2, np.where(X[:, 1] < -0.2, 1, 0))
    y = np.where(rng.random(len(y)) < 0.1, rng.integers(0, 3, len(y)), y)  # noisy labels
    box = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    return box, _data(seed=2)


def _model_labels(box: DecisionTreeClassifier, X: np.ndarray) -> np.ndarray:
    return box.predict(X.astype(np.float32)).astype(np.int64)


def _rule_mask(rule: us.Rule, X: np.ndarray) -> np.ndarray:
    """Rows meeting a rule's conditions, counted directly from its (feature, op, threshold)."""
    mask = np.ones(len(X), dtype=bool)
    for c in rule.conditions:
        mask &= (X[:, c.feature] <= c.threshold) if c.op == "<=" else (X[:, c.feature] > c.threshold)
    return mask


def test_tree_surrogate_recovers_a_shallow_tree(tree_box):
    box, X = tree_box
    labels = _model_labels(box, X)
    assert min(np.bincount(labels)) > 0.1 * len(X)  # non-trivial: three well-populated classes
    sur = us.distill(box, X, kind="tree", max_depth=3, min_samples_leaf=1)
    assert sur.fidelity() >= 0.99
    X_new = _data(seed=7)
    assert sur.fidelity(X_new) >= 0.99
    # as a plain numpy callable the same
    sur2 = us.distill(lambda a: box.predict_proba(a), X, kind="tree", max_depth=3, min_samples_leaf=1)
    assert sur2.fidelity() >= 0.99


def test_fidelity_is_measured_on_held_out_rows(tree_box):
    box, X = tree_box
    def net(a):  # a wavy boundary no small tree can trace exactly
        s = np.asarray(a[:, 0] + 0.8 * np.sin(3 * a[:, 1]))
        return np.stack([-s, s], 1)

    sur = us.distill(Model(net, backend="numpy"), X, kind="tree", max_depth=None, min_samples_leaf=1, seed=3)
    d = sur._data
    fit_rows = {r.tobytes() for r in d.X_fit}
    assert not any(r.tobytes() in fit_rows for r in d.X_val)  # disjoint
    assert d.X_val.shape[0] == round(0.25 * len(X)) and d.X_fit.shape[0] + d.X_val.shape[0] == len(X)
    labels_val = np.asarray(net(d.X_val.astype(np.float32))).argmax(1)
    assert sur.fidelity() == pytest.approx((sur.predict(d.X_val) == labels_val).mean(), abs=1e-12)
    # a fully grown tree is perfect on its own rows, not on the held-out ones
    assert sur.train_fidelity == 1.0
    assert sur.fidelity() < 0.995
    with pytest.warns(UserWarning, match="used to fit the surrogate"):
        sur.fidelity(d.X_fit[:50])


def test_given_validation_set_is_used(tree_box):
    box, X = tree_box
    Xv = _data(500, seed=11)
    sur = us.distill(box, X, X_val=Xv, kind="tree", max_depth=2)
    direct = (sur.predict(Xv) == _model_labels(box, Xv)).mean()
    assert sur.held_out["n_rows"] == 500
    assert sur.fidelity() == pytest.approx(direct, abs=1e-12)
    assert sur._data.X_fit.shape[0] == len(X)  # all of X fits when X_val is given


@pytest.mark.parametrize("kind", ["tree", "rules"])
def test_rule_coverage_and_fidelity_equal_a_direct_count(tree_box, kind):
    box, X = tree_box
    sur = us.distill(box, X, kind=kind, max_depth=3, seed=1)
    Xv = sur._data.X_val
    ref = _model_labels(box, Xv)
    rules = sur.rules()
    assert len(rules) >= 3
    masks: list[np.ndarray] = []
    for r in rules:
        if r.is_default:
            mask = ~np.any(masks, axis=0)
        else:
            mask = _rule_mask(r, Xv)
        masks.append(mask)
        assert r.n_covered == mask.sum()
        assert r.coverage == pytest.approx(mask.mean(), abs=1e-12)
        if mask.any():
            assert r.fidelity == pytest.approx((ref[mask] == r.prediction).mean(), abs=1e-12)
            assert np.all(sur.predict(Xv[mask]) == r.prediction)  # the rule says what the tree says
        else:  # a leaf of synthetic rows only: no held-out figure rather than a made-up one
            assert r.fidelity is None
    stacked = np.stack(masks)
    assert np.all(stacked.sum(0) == 1)  # rules partition the rows
    assert np.array_equal(sur.rule_index(Xv), stacked.argmax(0))


def test_rule_list_answers_like_the_tree_with_fewer_rules(tree_box):
    box, X = tree_box
    tree = us.distill(box, X, kind="tree", max_depth=3)
    rules = us.distill(box, X, kind="rules", max_depth=3)
    X_new = _data(800, seed=5)
    assert np.array_equal(tree.predict(X_new), rules.predict(X_new))
    assert rules.complexity < tree.complexity
    assert rules.rules()[-1].is_default and str(rules.rules()[-1]).startswith("ELSE ")


def test_collapsed_leaves_change_no_answer():
    # a tree whose sibling leaves often agree: the readable rules must still answer like it
    X = _data(2000, 4, seed=3)
    box = DecisionTreeClassifier(max_depth=5, random_state=0).fit(X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int))
    sur = us.distill(box, X, kind="tree", max_depth=5, min_samples_leaf=1)
    assert sur.complexity < sur.estimator.get_n_leaves()
    idx = sur.rule_index(X)
    preds = np.array([r.prediction for r in sur.rules()])[idx]
    assert np.array_equal(preds, sur.predict(X))


def test_rules_read_like_sentences_with_names():
    from unveil.zoo import breast_cancer_mlp, load_dataset

    data = load_dataset("breast_cancer_mlp")
    X = torch.cat([data.X_train, data.X_test])
    y = torch.cat([data.y_train, data.y_test])
    sur = us.distill(breast_cancer_mlp(), X, kind="rules", max_depth=3, y=y,
                     feature_names=data.feature_names, class_names=data.class_names)
    text = str(sur.rules())
    first = text.splitlines()[0]
    assert re.fullmatch(r"IF .+ THEN (malignant|benign) — covers \d+%, fidelity \d+%", first), first
    assert any(name in text for name in data.feature_names)
    assert sur.fidelity() >= 0.85 and 0.8 <= sur.accuracy() <= 1.0
    assert "model_accuracy" in sur.held_out
    d = json.loads(json.dumps(sur.to_dict()))
    assert d["complexity_unit"] == "rules" and len(d["rules"]) == sur.complexity


def test_linear_surrogate_finds_the_used_columns():
    X = _data(3000, 6, seed=4)
    w = torch.tensor([2.0, 0.0, -1.5, 0.0, 0.0, 0.0])
    net = lambda x: torch.stack([torch.zeros(len(x)), x @ w], 1)  # noqa: E731
    sur = us.distill(net, X, kind="linear", max_features=2)
    assert sur.complexity == 2
    used = set(sur.weights()["1"]) - {"(intercept)"}
    assert used == {"x0", "x2"}
    assert sur.fidelity() >= 0.97
    # sign and ratio of weights in the columns' units match the network's
    wts = sur.weights()["1"]
    assert wts["x0"] > 0 > wts["x2"] and wts["x0"] / -wts["x2"] == pytest.approx(2 / 1.5, rel=0.15)
    assert "x0" in sur.describe()


def test_lasso_surrogate_of_a_linear_regressor_recovers_its_weights():
    X = _data(1500, 4, seed=6)
    X[:, 1] *= 10.0  # different units
    y = X @ np.array([1.0, 0.2, 0.0, -3.0]) + 0.5
    box = LinearRegression().fit(X, y)
    sur = us.distill(box, X, kind="linear", alpha=1e-4)
    assert sur.task == "regression" and sur.fidelity() > 0.999
    w = sur.weights()["score"]
    assert w["x0"] == pytest.approx(1.0, rel=1e-2) and w["x1"] == pytest.approx(0.2, rel=1e-2)
    assert w["x3"] == pytest.approx(-3.0, rel=1e-2) and abs(w.get("x2", 0.0)) < 1e-2
    assert w["(intercept)"] == pytest.approx(0.5, abs=2e-2)


def test_regression_tree_surrogate_recovers_a_step_function():
    X = _data(2000, 3, seed=8)
    box = DecisionTreeRegressor(max_depth=2).fit(X, np.where(X[:, 0] > 0, 3.0, -1.0) + (X[:, 1] > 1))
    sur = us.distill(box, X, kind="tree", max_depth=2)
    assert sur.fidelity() > 0.99
    for r in sur.rules():
        assert r.fidelity is None and r.error is not None and r.error < 1e-6
        assert "mean |error|" in str(r)


def test_fidelity_curve_reaches_the_black_box_depth(tree_box):
    box, X = tree_box
    curve = us.fidelity_curve(box, X, kind="tree", values=[1, 2, 3, 4], min_samples_leaf=1)
    assert curve.fidelity[0] < 0.9 and curve.fidelity[2] >= 0.99
    assert curve.best(0.99) in (2, 3)  # never deeper than the black box itself
    assert curve.complexity[0] == 2 and curve.complexity_unit == "leaves"
    assert json.loads(json.dumps(curve.to_dict()))["values"] == [1, 2, 3, 4]
    lin = us.fidelity_curve(box, X, kind="linear", values=[1, 5])
    assert lin.parameter == "max_features" and lin.complexity[0] <= lin.complexity[1]
    # a surrogate's own curve: the same figures, from the answers it already has
    counted = Model(box)
    sur = us.distill(counted, X, kind="tree", max_depth=2, min_samples_leaf=1)
    before = counted.n_evals
    own = sur.curve([1, 2, 3, 4])
    assert counted.n_evals == before
    assert own.fidelity == curve.fidelity and own.complexity == curve.complexity


def test_accuracy_equals_direct_count(tree_box):
    box, X = tree_box
    y = np.random.default_rng(0).integers(0, 3, len(X))
    sur = us.distill(box, X, kind="tree", max_depth=3, y=y)
    assert sur.accuracy(X, y) == pytest.approx((sur.predict(X) == y).mean(), abs=1e-12)
    d = sur._data
    assert sur.accuracy() == pytest.approx((sur.predict(d.X_val) == d.y_val).mean(), abs=1e-12)


def test_one_score_models_need_a_threshold_for_classes():
    X = _data(400, 3)
    net = lambda x: x[:, 0] - 0.2  # noqa: E731
    with pytest.raises(OptionError, match="pass threshold="):
        us.distill(net, X, task="classification")
    sur = us.distill(net, X, threshold=0.0, max_depth=1)
    assert sur.task == "classification" and sur.fidelity() > 0.95
    assert us.distill(net, X, max_depth=3).task == "regression"


def test_bad_inputs_raise_clear_errors(tree_box):
    box, X = tree_box
    with pytest.raises(OptionError, match="kind must be"):
        us.distill(box, X, kind="forest")  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(InputError, match=r"table of shape \(N, F\)"):
        us.distill(box, X[:, 0])
    with pytest.raises(InputError, match="feature names"):
        us.distill(box, X, feature_names=["a", "b"])
    with pytest.raises(InputError, match="NaN"):
        us.distill(box, np.where(X > 2.5, np.nan, X))
    with pytest.raises(OptionError, match="val_fraction"):
        us.distill(box, X, val_fraction=1.5)
    with pytest.raises(OptionError, match="max_depth"):
        us.distill(box, X, max_depth=0)
    with pytest.raises(OptionError, match="single class"):
        us.distill(lambda a: np.tile([1.0, 0.0], (len(a), 1)), X, kind="linear")
    sur = us.distill(box, X, max_depth=2)
    with pytest.raises(OptionError, match="no labels"):
        sur.accuracy()
    with pytest.raises(OptionError, match="no rules"):
        us.distill(box, X, kind="linear").rules()
    with pytest.raises(OptionError, match="class names"):
        us.distill(box, X, class_names=["a"])


@pytest.mark.parametrize("train", [False, True])
def test_model_left_unchanged(train):
    net = mlp(5, 3)
    net.train(train)
    X = _data(300)
    before = snapshot(net)
    with training_warning(train):
        us.distill(net, X, kind="rules", max_depth=2)
    assert_unchanged(net, before)
    broken = nn.Sequential(nn.Linear(5, 5), Raises())
    broken.train(train)
    before = snapshot(broken)
    with training_warning(train), pytest.raises((RuntimeError, ModelError), match="boom"):
        us.distill(broken, X)
    assert_unchanged(broken, before)


def test_results_do_not_depend_on_batch_size(tree_box):
    net = mlp(5, 3).eval()
    X = _data(500)
    a = us.distill(net, X, kind="tree", max_depth=3, batch_size=7)
    b = us.distill(net, X, kind="tree", max_depth=3)
    assert str(a.rules()) == str(b.rules())


def test_preprocess_reads_rules_in_raw_units(tree_box):
    """A model that takes standardised columns, distilled on raw rows through ``preprocess``:
    the same answers and figures as on the standardised rows, with thresholds in raw units."""
    box, X = tree_box
    mean, std = np.array([10.0, -3.0, 0.0, 100.0, 5.0]), np.array([2.0, 0.5, 1.0, 40.0, 3.0])
    raw = X * std + mean
    on_z = us.distill(box, X, max_depth=3, seed=2)
    on_raw = us.distill(box, raw, max_depth=3, seed=2, preprocess=lambda r: (r - mean) / std)
    assert on_raw.fidelity() == on_z.fidelity() and on_raw.complexity == on_z.complexity
    np.testing.assert_array_equal(on_raw.predict(raw), on_z.predict(X))
    for rz, rr in zip(on_z.rules(), on_raw.rules()):
        for cz, cr in zip(rz.conditions, rr.conditions):
            assert (cz.feature, cz.op) == (cr.feature, cr.op)
            # scikit-learn trees keep float32 thresholds
            assert cr.threshold == pytest.approx(cz.threshold * std[cz.feature] + mean[cz.feature], rel=1e-6)
    with pytest.warns(UserWarning, match="fidelity on them is optimistic"):  # rows it was fit on
        assert on_raw.fidelity(raw[:500]) == on_z.fidelity(X[:500])  # later queries go through it too
    with pytest.raises(InputError, match="one row per input row"):
        us.distill(box, raw, preprocess=lambda r: r[:10])
    with pytest.raises(OptionError, match="preprocess must be a function"):
        us.distill(box, raw, preprocess="standardise")  # type: ignore[arg-type]  # deliberately invalid
