"""Shapley values: axioms on small games, closed forms, shap's ExactExplainer, convergence and
unbiasedness of the estimators, errors, and the model left unchanged."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from _util import Raises, assert_unchanged, mlp, snapshot
from unveil.attribution.shapley import ExactShapley, KernelShap, PermutationShapley
from unveil.core.groups import column_groups, patches, tokens
from unveil.errors import BaselineError, InputError, OptionError


def brute_force(f, x: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Shapley values of v(S) = mean_j f(x_S, bg_j) by the definition (one row x)."""
    c = x.shape[0]
    memo: dict[tuple[int, ...], float] = {}

    def v(s: tuple[int, ...]) -> float:
        key = tuple(sorted(s))
        if key not in memo:
            keep = np.zeros(c, dtype=bool)
            keep[list(key)] = True
            memo[key] = float(np.mean(f(np.where(keep, x, bg))))
        return memo[key]

    phi = np.zeros(c)
    for i in range(c):
        rest = [j for j in range(c) if j != i]
        for k in range(c):
            w = math.factorial(k) * math.factorial(c - k - 1) / math.factorial(c)
            for s in itertools.combinations(rest, k):
                phi[i] += w * (v(s + (i,)) - v(s))
    return phi


@pytest.fixture(scope="module")
def game():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(7, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, generator=g) * 1.5
    bg = torch.randn(12, 7, generator=g)
    return net, x, bg


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean() / np.abs(b).mean())


# ----------------------------------------------------------------------------- exact values
def test_exact_matches_definition_and_efficiency(game):
    net, x, bg = game
    e = ExactShapley(net)(x, target=1, background=bg)
    f = lambda a: net(torch.as_tensor(a, dtype=torch.float32))[:, 1].detach().numpy()  # noqa: E731
    for i in range(3):
        ref = brute_force(f, x[i].numpy(), bg.numpy())
        np.testing.assert_allclose(e.extras["group_values"][i], ref, atol=2e-5)
    assert np.abs(e.extras["group_values"]).max() > 0.05  # not a trivial game
    # efficiency: sum = f(x) - mean f(bg)
    fbg = net(bg)[:, 1].mean().item()
    np.testing.assert_allclose(e.extras["group_values"].sum(1), e.outputs - fbg, atol=1e-5)
    assert e.baseline_outputs is not None and e.delta is not None
    np.testing.assert_allclose(e.baseline_outputs, fbg, atol=1e-6)
    assert np.abs(e.delta).max() < 1e-9
    assert e.n_evals == 3 + 3 * 12 + 3 * (2**7 - 2) * 12
    np.testing.assert_allclose(e.values, e.extras["group_values"], rtol=1e-6)  # one element per column


def test_symmetry_and_dummy():
    w = torch.tensor([2.0, 2.0, 0.0, -1.0, 0.5])
    f = lambda a: np.tanh(a @ w.numpy()) + a[:, 0] * a[:, 1]  # noqa: E731  features 0, 1 symmetric; 2 a dummy
    x = np.array([[0.7, 0.7, 3.0, 0.2, -1.0]], dtype=np.float32)
    e = ExactShapley(f)(x, target=None, baseline=0.0)
    v = e.extras["group_values"][0]
    assert abs(v[0]) > 0.1
    assert v[0] == pytest.approx(v[1], abs=1e-6)
    assert v[2] == pytest.approx(0.0, abs=1e-7)


def test_linearity():
    a = lambda t: np.sin(t).sum(1) + t[:, 0] * t[:, 2]  # noqa: E731
    b = lambda t: np.maximum(t[:, 1] - t[:, 3], 0.0) * 3  # noqa: E731
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    bg = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    ea, eb = (ExactShapley(f)(x, target=None, background=bg) for f in (a, b))
    eab = ExactShapley(lambda t: a(t) + 2 * b(t))(x, target=None, background=bg)
    np.testing.assert_allclose(eab.values, ea.values + 2 * eb.values, atol=1e-5)
    assert np.abs(eb.values).max() > 0.1


@pytest.mark.parametrize("cls", [ExactShapley, KernelShap, PermutationShapley])
def test_linear_model_with_background(cls):
    torch.manual_seed(0)
    lin = nn.Linear(12, 1)
    model = nn.Sequential(lin, nn.Flatten(0)).eval()
    x, bg = torch.randn(4, 12), torch.randn(30, 12) + 0.5
    kw = {} if cls is ExactShapley else {"n_samples": 300}
    expected = (lin.weight[0] * (x - bg.mean(0))).detach().numpy()
    for opts in ({"background": bg}, {"background": bg, "baseline": "mean"}):
        if cls is ExactShapley and "baseline" not in opts:
            # 2**12 coalitions per row, each on 30 background rows: the cost warning is due
            with pytest.warns(UserWarning, match="12 groups need 2\\*\\*12 coalitions"):
                e = cls(model)(x, target=None, **opts)
        elif cls is ExactShapley:
            e = cls(model)(x, target=None, **opts)
        else:
            e = cls(model, **kw)(x, target=None, seed=3, **opts)
        np.testing.assert_allclose(e.values, expected, atol=2e-5)


def test_exact_equals_shap_exact_explainer(game):
    shap = pytest.importorskip("shap")
    net, x, bg = game
    e = ExactShapley(net)(x[:2], target=0, background=bg)
    f = lambda a: net(torch.as_tensor(a, dtype=torch.float32))[:, 0].detach().numpy()  # noqa: E731
    masker = shap.maskers.Independent(bg.numpy(), max_samples=len(bg))
    ref = shap.explainers.Exact(f, masker)(x[:2].numpy()).values
    np.testing.assert_allclose(e.values, ref, atol=2e-5)


# ----------------------------------------------------------------------------- estimators
@pytest.fixture(scope="module")
def game10():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(10, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 1), nn.Flatten(0)).eval()
    g = torch.Generator().manual_seed(4)
    x, bg = torch.randn(2, 10, generator=g) * 1.5, torch.randn(8, 10, generator=g)
    exact = ExactShapley(net)(x, target=None, background=bg).extras["group_values"]
    return net, x, bg, exact


@pytest.mark.parametrize("make", [
    lambda m, n: KernelShap(m, n_samples=n),
    lambda m, n: KernelShap(m, n_samples=n, estimator="wls"),
    lambda m, n: KernelShap(m, n_samples=n, sampling="leverage"),
    lambda m, n: PermutationShapley(m, n_samples=n),
])
def test_estimators_converge_to_exact(game10, make):
    net, x, bg, exact = game10
    # the game is far from additive: an additive fit misses a good share of it
    lin = KernelShap(net, n_samples=24, estimator="wls")(x, target=None, background=bg, seed=0)
    assert rel_err(lin.extras["group_values"], exact) > 0.02
    errs = []
    for n in (64, 256, 1000):
        runs = [make(net, n)(x, target=None, background=bg, seed=s).extras["group_values"] for s in range(3)]
        errs.append(np.mean([rel_err(r, exact) for r in runs]))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.5 * errs[0]
    # a budget that holds every coalition gives the exact values
    full = make(net, 1024)(x, target=None, background=bg, seed=0)
    np.testing.assert_allclose(full.extras["group_values"], exact, atol=1e-6)
    assert np.all(full.stderr == 0)


def _game8():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(0)).eval()
    g = torch.Generator().manual_seed(6)
    x, bg = torch.randn(1, 8, generator=g) * 2, torch.randn(10, 8, generator=g)
    exact = ExactShapley(net)(x, target=None, background=bg).extras["group_values"][0]
    return net, x, bg, exact


@pytest.mark.parametrize("make", [
    lambda m: KernelShap(m, n_samples=160, estimator="stratified"),
    lambda m: KernelShap(m, n_samples=160, estimator="wls"),
    lambda m: PermutationShapley(m, n_samples=160),
])
def test_mean_over_seeds_within_3_se_and_stderr_calibrated(make):
    net, x, bg, exact = _game8()
    runs = [make(net)(x, target=None, background=bg, seed=s) for s in range(64)]
    est = np.stack([r.extras["group_values"][0] for r in runs])
    spread = est.std(0, ddof=1)
    assert spread.min() > 1e-4  # really stochastic
    se_mean = spread / np.sqrt(len(runs))
    assert np.all(np.abs(est.mean(0) - exact) <= 3 * se_mean)
    reported = np.stack([r.extras["group_stderr"][0] for r in runs]).mean(0)
    ratio = reported / spread
    assert 0.6 < np.median(ratio) < 1.6


def test_surrogate_default_small_bias_lower_error_and_stderr():
    """The default (surrogate) estimator fits its surrogate on the same coalitions, so it is
    unbiased only up to O(1/n): its bias must stay well inside its spread, its error below the
    unbiased stratified estimator's, and its reported standard error near the real spread."""
    net, x, bg, exact = _game8()

    def runs(**kw):
        out = [KernelShap(net, n_samples=160, **kw)(x, target=None, background=bg, seed=s) for s in range(64)]
        return np.stack([r.extras["group_values"][0] for r in out]), np.stack([r.extras["group_stderr"][0] for r in out])

    est, se = runs()
    spread = est.std(0, ddof=1)
    assert spread.min() > 1e-5  # really stochastic
    assert np.all(np.abs(est.mean(0) - exact) <= 3 * spread / 8 + 0.5 * spread)
    strat, _ = runs(estimator="stratified")
    rmse = lambda e: float(np.sqrt(((e - exact) ** 2).mean()))  # noqa: E731
    assert rmse(est) < 0.75 * rmse(strat)
    assert 0.5 < np.median(se.mean(0) / spread) < 1.6


def test_same_seed_same_answer_any_batch_size(game10):
    net, x, bg, _ = game10
    for cls in (KernelShap, PermutationShapley):
        a = cls(net, n_samples=200)(x, target=None, background=bg, seed=11)
        b = cls(net, n_samples=200, batch_size=7)(x, target=None, background=bg, seed=11)
        c = cls(net, n_samples=200)(x[:2], target=None, background=bg, seed=11)
        d = cls(net, n_samples=200)(x, target=None, background=bg, seed=12)
        torch.testing.assert_close(a.values, b.values)
        torch.testing.assert_close(a.values[:2], c.values)  # rows do not see each other
        assert not np.allclose(a.values, d.values)
        assert a.seed == 11 and a.stderr is not None and a.stderr.shape == a.values.shape
    auto = KernelShap(net, n_samples=200)(x, target=None, background=bg)
    again = KernelShap(net, n_samples=200)(x, target=None, background=bg, seed=auto.seed)
    np.testing.assert_array_equal(auto.values, again.values)


def test_budget_counts_coalitions(game10):
    net, x, bg, _ = game10
    e = KernelShap(net, n_samples=100)(x, target=None, background=bg, seed=0)
    # N rows for the outputs, N*M for the empty coalition, N*(S-2)*M for the rest
    assert e.n_evals == 2 + 2 * 8 + 2 * 98 * 8
    e = KernelShap(net, n_samples=101)(x, target=None, baseline="mean", background=bg, seed=0)
    assert e.n_evals == 2 + 2 + 2 * 98
    p = PermutationShapley(net, n_samples=100)(x, target=None, baseline=0.0, seed=0)
    assert 2 + 2 < p.n_evals <= 2 + 2 + 2 * 98
    assert p.meta["coalitions_per_row"]["10"] <= 100


def test_kernel_design_properties():
    from unveil.attribution._coalitions import kernel_design

    c = 12
    for balanced in (False, True):
        d = kernel_design(c, 512, np.random.default_rng(0), balanced=balanced)
        assert len(d.z) == 510 and len(np.unique(np.packbits(d.z, axis=1), axis=0)) == 510  # distinct
        size = d.z.sum(1)
        # sizes 1, 2 (and 10, 11) enumerated, as shap does at this budget; 3..9 sampled
        for s in (1, 2, 10, 11):
            assert (size == s).sum() == math.comb(c, s)
        assert set(size.tolist()) == set(range(1, 12))
        # weights per size add up to the Shapley kernel's mass of the size
        for s in range(1, c):
            mass = (c - 1) / (s * (c - s))
            assert d.weight[size == s].sum() == pytest.approx(mass)
        # pairs are complements
        for p in range(0, int(d.pair.max()) + 1, 37):
            a, b = d.z[d.pair == p]
            assert np.array_equal(a, ~b)
    # balanced: in a sampled size players appear more evenly than in independent draws
    def spread(balanced: bool) -> float:
        out = []
        for seed in range(6):
            d = kernel_design(c, 512, np.random.default_rng(seed), balanced=balanced)
            out.append(d.z[d.z.sum(1) == 4].sum(0).std())
        return float(np.mean(out))

    assert spread(True) < 0.7 * spread(False)


# ----------------------------------------------------------------------------- modalities
def test_images_patches_and_expand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16 * 16, 3)).eval()
    x = torch.rand(2, 1, 16, 16)
    e = KernelShap(net, n_samples=64)(x, target=2, seed=0)  # 8x8 patches: 4 groups, exact
    ex = ExactShapley(net)(x, target=2)
    np.testing.assert_allclose(e.values, ex.values, atol=1e-5)
    lab = patches((1, 16, 16), 8).labels[0].numpy()
    gv = ex.extras["group_values"]
    np.testing.assert_allclose(ex.values[1], gv[1][lab], atol=0)
    assert ex.groups["kind"] == "patches" and ex.modality == "image"
    np.testing.assert_allclose(gv.sum(1), ex.outputs - ex.baseline_outputs, atol=1e-5)


def test_token_masking_and_null_players():
    torch.manual_seed(0)

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(30, 6)
            self.out = nn.Linear(6, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.emb(ids).sum(1)))

    model = Bag().eval()
    ids = torch.randint(3, 30, (3, 6))
    ids[1, 4:] = 0  # padding
    grp = tokens(ids, special_ids=[0])
    e = KernelShap(model, n_samples=40)(ids, target=1, groups=grp, mask_id=1, seed=0)
    ex = ExactShapley(model)(ids, target=1, groups=grp, mask_id=1)
    np.testing.assert_allclose(e.values[1], ex.values[1], atol=1e-5)  # 2**4 <= 40: exact
    assert rel_err(e.values[[0, 2]], ex.values[[0, 2]]) < 0.2  # 2**6 > 40: sampled
    assert np.all(ex.extras["group_values"][1, 4:] == 0)
    assert e.meta["coalitions_per_row"] == {"4": 16, "6": 40}
    # masking by hand: the full-masked row's score is the baseline output
    assert grp.labels is not None
    masked = torch.where(grp.labels >= 0, torch.ones_like(ids), ids)
    assert ex.baseline_outputs is not None
    np.testing.assert_allclose(ex.baseline_outputs, model(masked)[:, 1].detach().numpy(), atol=1e-6)
    assert ex.modality == "text" and e.values.dtype == np.float32


def test_plain_callables_and_sklearn():
    sk = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] - 2 * X[:, 1] + 0.5 * X[:, 2] > 0).astype(int)
    clf = sk.LogisticRegression().fit(X, y)
    bg = X[:20]
    ex = ExactShapley(clf)(X[:3], target=1, background=bg)
    ks = KernelShap(clf, n_samples=24)(X[:3], target=1, background=bg, seed=0)  # 2**5 > 24
    assert rel_err(ks.extras["group_values"], ex.extras["group_values"]) < 0.05
    ref = brute_force(lambda a: clf.predict_proba(a)[:, 1], X[0].astype(np.float32), bg.astype(np.float32))
    np.testing.assert_allclose(ex.extras["group_values"][0], ref, atol=1e-5)
    # a numpy function through uv.explain
    e = uv.explain(lambda a: a @ np.arange(5.0), X[:2], method="kernel_shap", target=None,
                   background=bg, n_samples=64, seed=0)
    np.testing.assert_allclose(e.values, np.arange(5.0) * (X[:2] - bg.mean(0)), atol=1e-4)


def test_column_groups():
    f = lambda a: a[:, 0] * a[:, 1] + a[:, 2]  # noqa: E731
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    grp = column_groups({"ab": [0, 1]}, 4)
    e = ExactShapley(f)(x, target=None, groups=grp, baseline=0.0)
    np.testing.assert_allclose(e.extras["group_values"][0], [2.0, 3.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(e.values[0], [2.0, 2.0, 3.0, 0.0], atol=1e-6)


# ----------------------------------------------------------------------------- errors
def test_bad_inputs(game):
    net, x, bg = game
    with pytest.raises(OptionError, match="FeatureGroups"):
        KernelShap(net)(x, target=0, groups=[[0, 1]])
    with pytest.raises(InputError, match="feature groups are for samples of shape"):
        KernelShap(net)(x, target=0, groups=patches((1, 8, 8), 4))
    with pytest.raises(OptionError, match="option n_samples=2 is outside >= 4"):
        KernelShap(net, n_samples=2)
    with pytest.raises(OptionError, match="too small for 7 groups"):
        KernelShap(net, n_samples=6)(x, target=0, seed=0, baseline=0.0)
    with pytest.raises(OptionError, match="too small for 7 groups"):
        PermutationShapley(net, n_samples=10)(x, target=0, seed=0, baseline=0.0)
    with pytest.raises(OptionError, match="option seed=-1 is outside >= 0"):
        KernelShap(net)(x, target=0, seed=-1)
    with pytest.raises(OptionError, match=r"estimator='exact' should be 'surrogate' \| 'stratified' \| 'wls'"):
        KernelShap(net, estimator="exact")  # type: ignore[arg-type]  # refused on purpose
    with pytest.raises(OptionError, match=r"sampling='uniform' should be 'kernel' \| 'leverage'"):
        KernelShap(net, sampling="uniform")  # type: ignore[arg-type]  # refused on purpose
    with pytest.raises(BaselineError, match="background rows have shape"):
        KernelShap(net)(x, target=0, background=torch.zeros(5, 3))
    with pytest.raises(OptionError, match="mask_id= is for token ids"):
        KernelShap(net)(x, target=0, mask_id=0)
    with pytest.raises(OptionError, match="need 2\\*\\*7 coalitions"):
        ExactShapley(net, max_groups=6)(x, target=0, baseline=0.0)
    with pytest.raises(OptionError, match=r"option max_groups=40 is outside \[1, 30\]"):
        ExactShapley(net, max_groups=40)
    ids = torch.randint(0, 5, (2, 4))
    model = nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(12, 2)).eval()
    with pytest.raises(OptionError, match="background= averages over reference rows"):
        KernelShap(model)(ids, target=0, background=ids)
    with pytest.raises(OptionError, match="makes no sense for token ids"):
        KernelShap(model)(ids, target=0, baseline="blur")
    with pytest.raises(OptionError, match="either mask_id= or baseline="):
        KernelShap(model)(ids, target=0, baseline=0, mask_id=1)


# ----------------------------------------------------------------------------- model state
@pytest.mark.parametrize("cls", [ExactShapley, KernelShap, PermutationShapley])
@pytest.mark.parametrize("train", [False, True])
def test_model_unchanged(cls, train):
    model = mlp(n_in=5)
    model.train(train)
    before = snapshot(model)
    x = torch.randn(2, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the training-mode notice
        cls(model)(x, target=1, background=torch.randn(4, 5), seed=0)
    assert_unchanged(model, before)
    bad = nn.Sequential(nn.Linear(5, 5), Raises())
    bad.train(train)
    before = snapshot(bad)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cls(bad)(x, target=None, seed=0)
    assert_unchanged(bad, before)


def test_registered():
    info = {m.name: m for m in uv.methods()}
    for name in ("exact_shapley", "kernel_shap", "permutation_shapley"):
        assert name in info and not info[name].needs_gradients
    assert info["kernel_shap"].stochastic and not info["exact_shapley"].stochastic


def test_exact_warns_on_large_jobs_only() -> None:
    f = lambda a: a.sum(1, keepdims=True)  # noqa: E731  a numpy model: only the cost matters
    x = np.random.default_rng(0).random((1, 19)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"2\*\*19 coalitions per row, 524,288 model rows.*kernel_shap"):
        big = ExactShapley(f)(x, target=0, baseline="zeros")
    np.testing.assert_allclose(big.values, x, rtol=1e-5)  # additive model: phi_i = x_i
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ExactShapley(f)(x[:, :10], target=0, baseline="zeros")
