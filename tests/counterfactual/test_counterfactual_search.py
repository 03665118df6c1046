"""Counterfactual search: the closed form of a linear classifier, hard constraints on real and
synthetic tables, diversity, infeasible constraints and bad names."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from _util import Raises, assert_unchanged, snapshot
from unveil.audit.examples import credit_scorer, synthetic_credit
from unveil.core.batching import get_memory_budget, set_memory_budget
from unveil.counterfactual import Constraints, counterfactuals
from unveil.errors import ModelError, OptionError


def _linear(seed: int, f: int = 5) -> tuple[nn.Linear, np.ndarray, np.ndarray, float]:
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(f, 1).double().eval()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(1, f, generator=gen, dtype=torch.float64))
        lin.bias.fill_(0.3)
    x = torch.randn(40, f, generator=gen, dtype=torch.float64).numpy()
    return lin, x, lin.weight.detach().numpy()[0], float(lin.bias.detach()[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_minimal_l2_is_the_distance_to_the_hyperplane(seed):
    lin, x, w, b = _linear(seed)
    res = counterfactuals(lin, x, threshold=0.0, scale="none", sparsity=0.0, plausibility=0.0)
    expected = np.abs(x @ w + b) / np.linalg.norm(w)
    assert expected.std() > 0.1  # not a trivial set of rows
    assert res.found.all()
    np.testing.assert_allclose(res.l2[:, 0], expected, rtol=5e-3, atol=1e-6)
    # and the counterfactual is the foot of the perpendicular: on the boundary, along w
    d = res.rows[:, 0] - x
    cos = np.abs(d @ w) / np.linalg.norm(d, axis=1) / np.linalg.norm(w)
    assert cos.min() > 1 / (1 + 5e-3)  # the same tolerance, as an angle


def test_linear_with_immutable_columns_changes_none_of_them():
    lin, x, w, b = _linear(2)
    res = counterfactuals(lin, x, threshold=0.0, scale="none", sparsity=0.0,
                          constraints=Constraints(immutable=["x0", 3]))
    free = np.array([False, True, True, False, True])
    expected = np.abs(x @ w + b) / np.linalg.norm(w[free])
    assert res.found.all()
    np.testing.assert_array_equal(res.rows[:, 0][:, ~free], x[:, ~free])
    np.testing.assert_allclose(res.l2[:, 0], expected, rtol=5e-3, atol=1e-6)


def _check_constraints(res, X, data, immutable, up, cats):
    """Every returned counterfactual, checked here from scratch (not through the result's counts)."""
    names = res.feature_names
    for i in range(len(res)):
        for k in np.flatnonzero(res.valid[i]):
            row = res.rows[i, k]
            for c in immutable:
                assert row[names.index(c)] == X[i, names.index(c)]
            for c in up:
                assert row[names.index(c)] >= X[i, names.index(c)]
            for c in cats:
                assert row[names.index(c)] in set(data[:, names.index(c)])


def _check_result(res, model, X, decide_class, k):
    n = len(res)
    valid_rows = res.rows[res.valid]
    assert valid_rows.shape[0] > 0
    got = decide_class(valid_rows)
    want = np.repeat(res.desired[:, None], k, axis=1)[res.valid]
    np.testing.assert_array_equal(got, want)  # the model really gives the desired class
    assert res.found.mean() >= 0.99
    assert res.metrics["violations"] == 0
    for miss in np.flatnonzero(~res.found):
        assert res.status(int(miss)) == "no counterfactual within these constraints"
        assert np.isfinite(res.closest[miss]).all()
    # diversity: mean pairwise L1 among a row's counterfactuals vs their mean distance to it
    ratios = []
    for i in range(n):
        rows = res.rows[i][res.valid[i]] / res.scale
        if rows.shape[0] < 2:
            continue
        pair = np.abs(rows[:, None] - rows[None]).sum(-1)[np.triu_indices(rows.shape[0], 1)].mean()
        ratios.append(pair / np.abs(rows - X[i] / res.scale).sum(-1).mean())
    assert len(ratios) > 0.9 * n
    assert np.mean(ratios) >= 0.10


def test_credit_table_constraints_validity_and_diversity():
    X, _, names = synthetic_credit(1500, seed=0)
    net = credit_scorer()
    before = snapshot(net)
    rows = X[:200]
    res = counterfactuals(net, rows, data=X, feature_names=names, n_counterfactuals=3,
                          class_names=["rejected", "approved"],
                          constraints=dict(immutable=["gender"], increasing=["age"], categorical=["gender"]))
    assert_unchanged(net, before)

    def cls(r):
        with torch.no_grad():
            return net(torch.tensor(r, dtype=torch.float32)).argmax(1).numpy()

    _check_result(res, net, rows, cls, 3)
    _check_constraints(res, rows, X, ["gender"], ["age"], ["gender"])
    text = res.recourse(int(np.flatnonzero(res.found)[0]))
    assert text.startswith("Had ") and ("\u201capproved\u201d" in text or "\u201crejected\u201d" in text)


def test_fair_data_network_with_categorical_columns():
    pytest.importorskip("statsmodels")
    from unveil.audit.examples import load_fair, train_net

    X, y, names = load_fair()
    net = train_net(X[:4000], y[:4000], None, seed=0)
    cats = ["rate_marriage", "religious", "children", "educ", "occupation", "occupation_husb"]
    rows = X[4000:4200]
    res = counterfactuals(net, rows, data=X[:4000], feature_names=names, n_counterfactuals=3,
                          constraints=dict(immutable=["religious"], increasing=["age"], categorical=cats))

    def cls(r):
        with torch.no_grad():
            return net(torch.tensor(r, dtype=torch.float32)).argmax(1).numpy()

    _check_result(res, net, rows, cls, 3)
    _check_constraints(res, rows, X[:4000], ["religious"], ["age"], cats)


def test_black_box_search_with_preprocess_works_in_table_units():
    from sklearn.linear_model import LogisticRegression

    X, y, names = synthetic_credit(800, seed=1)
    mu, sd = X.mean(0), X.std(0)
    clf = LogisticRegression().fit((X - mu) / sd, y)
    res = counterfactuals(clf, X[:60], data=X, feature_names=names, preprocess=lambda r: (r - mu) / sd,
                          constraints=dict(immutable=["gender", "zip_area"], ranges={"debt": (-3, 3)}))
    assert res.method == "spheres" and res.found.mean() >= 0.99
    np.testing.assert_array_equal(clf.predict((res.rows[:, 0] - mu) / sd)[res.found], res.desired[res.found])
    assert (np.abs(res.rows[res.found, 0][:, [4, 5]] - X[:60][res.found][:, [4, 5]]) == 0).all()
    assert (np.abs(res.rows[res.found, 0][:, 1]) <= 3).all()


def test_infeasible_constraints_report_the_closest_candidate():
    X, _, names = synthetic_credit(500, seed=2)
    net = credit_scorer()
    res = counterfactuals(net, X[:20], data=X, feature_names=names,
                          constraints=dict(feasible=lambda r: np.zeros(len(r), bool)))
    assert not res.found.any() and not res.valid.any()
    assert all(res.status(i) == "no counterfactual within these constraints" for i in range(20))
    assert all(t.startswith("No change within these constraints") for t in res.recourse_texts)
    # the closest found is reported, with the constraint it breaks, never as valid
    assert (res.closest_violations == 1).all() and (np.abs(res.closest - X[:20]).sum(axis=1) > 0).all()
    assert all("breaks 1 kind of constraint" in t for t in res.recourse_texts)
    everything = counterfactuals(net, X[:10], data=X, feature_names=names, constraints=dict(immutable=names))
    assert not everything.found.any() and np.isfinite(everything.closest).all()


def test_unknown_names_and_bad_options_say_what_to_do():
    X, _, names = synthetic_credit(200, seed=0)
    net = credit_scorer()
    with pytest.raises(OptionError, match="did you mean 'gender'"):
        counterfactuals(net, X[:5], feature_names=names, constraints=dict(immutable=["gendr"]))
    with pytest.raises(OptionError, match="did you mean 'increasing'"):
        counterfactuals(net, X[:5], feature_names=names, constraints=dict(increasng=["age"]))
    with pytest.raises(OptionError, match="both increasing and decreasing"):
        counterfactuals(net, X[:5], feature_names=names, constraints=dict(increasing=["age"], decreasing=["age"]))
    with pytest.raises(OptionError, match="n_counterfactuals"):
        counterfactuals(net, X[:5], n_counterfactuals=0)
    with pytest.raises(OptionError, match="method must be"):
        counterfactuals(net, X[:5], method="genetic")  # type: ignore[arg-type]


def test_a_raising_model_leaves_no_mark():
    net = nn.Sequential(nn.Linear(4, 8), Raises(), nn.Linear(8, 2))
    net.train()
    before = snapshot(net)
    with pytest.raises(ModelError), pytest.warns(UserWarning, match="training mode"):
        counterfactuals(net, np.random.default_rng(0).standard_normal((3, 4)))
    assert_unchanged(net, before)


def test_result_round_trips_and_renders(tmp_path):
    X, _, names = synthetic_credit(400, seed=3)
    res = counterfactuals(credit_scorer(), X[:15], data=X, feature_names=names, n_counterfactuals=2,
                          class_names=["rejected", "approved"], constraints=dict(immutable=["gender"]))
    back = type(res).load(res.save(tmp_path / "cf.npz"))
    np.testing.assert_array_equal(back.rows, res.rows)
    np.testing.assert_array_equal(back.valid, res.valid)
    assert back.recourse_texts == res.recourse_texts and back.feature_names == names
    df = res.to_pandas()
    assert set(names) <= set(df.columns) and len(df) == int(res.valid.sum()) + int((~res.found).sum())
    html = res._repr_html_()
    assert "http" not in html and "<script" not in html and "Had " in html
    d = res.to_dict()
    assert d["rows"][0]["recourse"] == res.recourse(0)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    from unveil.errors import InputError

    with pytest.raises(InputError, match="cannot load"):
        type(res).load(tmp_path / "bad.npz")


def test_gradient_restarts_run_in_bounded_chunks_with_the_same_result():
    """The restarts go through the model in chunks (batch_size rows at most, or what the memory
    budget allows), and the chunking does not change the answer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    D = torch.randn(120, 5).numpy().astype(np.float64)
    X = D[:12]
    kw: dict[str, Any] = dict(data=D, n_counterfactuals=2, method="gradient", n_steps=60, sparsity=0.0)
    base = counterfactuals(net, X, **kw)
    sizes: list[int] = []
    handle = net[0].register_forward_hook(lambda _m, i, _o: sizes.append(int(i[0].shape[0])))
    try:
        small = counterfactuals(net, X, batch_size=5, **kw)
    finally:
        handle.remove()
    assert max(sizes) <= 5
    np.testing.assert_array_equal(small.valid, base.valid)
    np.testing.assert_allclose(small.rows, base.rows, atol=1e-4)
    budget = get_memory_budget()
    sizes.clear()
    # the descent's calls (inputs that need gradients), not the verifications after it
    handle = net[0].register_forward_hook(
        lambda _m, i, _o: sizes.append(int(i[0].shape[0])) if i[0].requires_grad else None)
    try:
        set_memory_budget(1 << 20)  # a few rows' worth: many blocks of rows
        tight = counterfactuals(net, X, **kw)
    finally:
        set_memory_budget(budget)
        handle.remove()
    assert sizes and max(sizes) < X.shape[0] * 4  # never every restart of every row at once
    np.testing.assert_array_equal(tight.valid, base.valid)
    np.testing.assert_allclose(tight.rows, base.rows, atol=1e-4)
