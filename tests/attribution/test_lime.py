"""LIME: the surrogate solver against scikit-learn, the quartile sampler against the lime
package, recovery of linear models (as lime does), errors, and the model left unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, mlp, snapshot
from unveil.attribution.lime import Lime, _sample_tables, quartile_sampler, weighted_ridge
from unveil.core.groups import FeatureGroups, patches, tokens
from unveil.errors import BaselineError, OptionError


def test_weighted_ridge_equals_sklearn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(2, 300, 6)).astype(np.float64)
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0]) + rng.normal(size=(2, 300))
    w = rng.uniform(0.1, 1.0, size=(2, 300))
    coef, icpt, score, se = weighted_ridge(torch.tensor(x), torch.tensor(y), torch.tensor(w), alpha=1.0)
    for r in range(2):
        ref = Ridge(alpha=1.0).fit(x[r], y[r], sample_weight=w[r])
        np.testing.assert_allclose(coef[r].numpy(), ref.coef_, atol=1e-9)
        assert icpt[r].item() == pytest.approx(ref.intercept_, abs=1e-9)
        assert score[r].item() == pytest.approx(ref.score(x[r], y[r], sample_weight=w[r]), abs=1e-9)
    assert 0.01 < se.min() and se.max() < 0.5


def test_quartile_sampler_matches_lime_discretizer():
    from lime.discretize import QuartileDiscretizer

    rng = np.random.default_rng(1)
    data = np.column_stack([rng.normal(size=400), rng.choice(3, size=400, p=[0.6, 0.2, 0.2]), rng.exponential(size=400)])
    ref = QuartileDiscretizer(data, [], ["a", "b", "c"], random_state=0)
    st = quartile_sampler(torch.tensor(data))
    disc = ref.discretize(data)
    for f in range(3):
        k = len(ref.means[f])  # bins of this feature
        np.testing.assert_allclose(st["mean"][f, :k].numpy(), ref.means[f], atol=1e-10)
        np.testing.assert_allclose(st["std"][f, :k].numpy(), ref.stds[f], atol=1e-10)
        np.testing.assert_allclose(st["min"][f, :k].numpy(), ref.mins[f], atol=1e-12)
        np.testing.assert_allclose(st["max"][f, :k].numpy(), ref.maxs[f], atol=1e-12)
        freq = np.bincount(disc[:, f].astype(int), minlength=4) / 400
        np.testing.assert_allclose(st["freq"][f].numpy(), freq, atol=1e-12)
    assert len(ref.means[1]) < 4  # ties: a column with fewer than four bins is covered
    # samples: bins drawn with the training frequencies, values inside their bin
    x = torch.tensor(data[:1])
    vals, same = _sample_tables(x, st, 4000, np.random.default_rng(0))
    bins = torch.searchsorted(st["borders"], vals.T.contiguous()).T
    for f in range(3):
        got = np.bincount(bins[1:, f].numpy(), minlength=4) / 3999
        assert np.abs(got - st["freq"][f].numpy()).max() < 0.03
    assert torch.equal(same[0, 1:], bins[1:] == torch.searchsorted(st["borders"], x.T.contiguous()).T)
    lo, hi = torch.tensor(data.min(0)), torch.tensor(data.max(0))
    assert bool((vals >= lo - 1e-6).all() and (vals <= hi + 1e-6).all())


def _rank_and_sign(coef: np.ndarray, w: np.ndarray) -> None:
    assert np.array_equal(np.sign(coef), np.sign(w))
    assert np.array_equal(np.argsort(-np.abs(coef)), np.argsort(-np.abs(w)))


def test_tables_recover_linear_model_like_lime():
    from lime.lime_tabular import LimeTabularExplainer

    rng = np.random.default_rng(0)
    train = rng.normal(size=(600, 5)).astype(np.float32)
    w = np.array([3.0, -2.0, 1.0, 0.5, -0.25])
    f = lambda a: np.asarray(a) @ w  # noqa: E731
    x = np.full((2, 5), 1.5, dtype=np.float32)  # every feature in its top quartile
    e = Lime(f)(x, target=None, background=train, seed=0)
    ours = e.extras["group_values"]
    for r in range(2):
        _rank_and_sign(ours[r], w)
    lime_exp = LimeTabularExplainer(train, mode="regression", random_state=0).explain_instance(
        x[0], f, num_features=5, num_samples=5000)
    theirs = np.array([dict(lime_exp.local_exp[1])[j] for j in range(5)])
    _rank_and_sign(theirs, w)
    np.testing.assert_allclose(ours[0], theirs, atol=0.08 * np.abs(theirs).max())
    assert e.extras["score"][0] == pytest.approx(lime_exp.score, abs=0.05)
    assert np.all(e.stderr > 0) and np.all(e.stderr < 0.1 * np.abs(ours).max())
    assert e.n_evals == 2 + 2 * 5000


def test_images_recover_linear_model_like_lime():
    from lime.lime_image import LimeImageExplainer

    w = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.5, 0.25, -0.75, 1.0, -2.5, 0.1, 3.5, -1.25, 0.6, -0.4, 2.2, -1.8])
    grp = patches((3, 16, 16), 4)
    masks = grp.masks(0).float()  # (16, 3, 16, 16)

    def model(a: torch.Tensor) -> torch.Tensor:
        return (a.unsqueeze(1) * masks).sum((2, 3, 4)) @ w / 48

    x = torch.rand(1, 3, 16, 16) + 0.5
    e = Lime(model, n_samples=1000)(x, target=None, groups=grp, seed=0)
    contrib = (w * (x.unsqueeze(1) * masks).sum((2, 3, 4))[0] / 48).numpy()
    ours = e.extras["group_values"][0]
    _rank_and_sign(ours, contrib)
    np.testing.assert_allclose(ours, contrib, atol=0.05 * np.abs(contrib).max())  # ridge shrinks a little
    lab = grp.labels[0, 0].numpy()
    explainer = LimeImageExplainer(random_state=0)
    exp = explainer.explain_instance(
        x[0].permute(1, 2, 0).double().numpy(),
        lambda imgs: model(torch.tensor(imgs).permute(0, 3, 1, 2).float()).numpy()[:, None],
        labels=(0,), hide_color=0, num_samples=1000, segmentation_fn=lambda _img: lab,
        top_labels=None,
    )
    theirs = np.array([dict(exp.local_exp[0])[j] for j in range(16)])
    _rank_and_sign(theirs, contrib)


def test_text_tokens_recover_bag_of_words():
    weights = torch.linspace(-2, 2, 12)
    weights[0] = 0.0  # the mask id carries nothing

    def model(ids: torch.Tensor) -> torch.Tensor:
        return weights[ids].sum(1)

    ids = torch.tensor([[3, 7, 1, 9, 11, 5], [2, 10, 4, 8, 0, 0]])
    grp = tokens(ids, special_ids=[0])
    e = uv.explain(model, ids, method="lime", target=None, groups=grp, mask_id=0, seed=0, n_samples=2000)
    gv = e.extras["group_values"]
    for r in range(2):
        n = int((ids[r] != 0).sum())
        _rank_and_sign(gv[r, :n], weights[ids[r, :n]].numpy())
        np.testing.assert_allclose(gv[r, :n], weights[ids[r, :n]].numpy(), atol=0.05)
    assert np.all(gv[1, 4:] == 0)  # padding is no feature
    assert e.modality == "text"


def test_seed_and_batch_size():
    rng = np.random.default_rng(0)
    train = torch.tensor(rng.normal(size=(100, 6)), dtype=torch.float32)
    net = mlp(n_in=6).eval()
    a = Lime(net, n_samples=500)(train[:3], target=1, background=train, seed=5)
    b = Lime(net, n_samples=500, batch_size=33)(train[:3], target=1, background=train, seed=5)
    c = Lime(net, n_samples=500)(train[:3], target=1, background=train, seed=6)
    torch.testing.assert_close(a.values, b.values)
    assert not np.allclose(a.values, c.values) and a.seed == 5
    img = TinyCNN(3, 4).eval()
    x = torch.rand(2, 3, 16, 16)
    grp = patches((3, 16, 16), 4)
    a = Lime(img, n_samples=200)(x, target=0, groups=grp, seed=1)
    b = Lime(img, n_samples=200, batch_size=17)(x, target=0, groups=grp, seed=1)
    torch.testing.assert_close(a.values, b.values)


def test_sklearn_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    clf = LogisticRegression().fit(X, (X[:, 0] - X[:, 2] > 0).astype(int))
    e = Lime(clf, n_samples=1000)(np.full((1, 4), 1.2), target=1, background=X, seed=0)
    gv = e.extras["group_values"][0]
    assert gv[0] > 0.05 and gv[2] < -0.05 and abs(gv[1]) < 0.5 * gv[0]


def test_bad_inputs():
    net = mlp(n_in=6).eval()
    x = torch.randn(2, 6)
    with pytest.raises(BaselineError, match="pass background="):
        Lime(net)(x, target=0)
    with pytest.raises(OptionError, match="takes no baseline="):
        Lime(net)(x, target=0, background=torch.randn(10, 6), baseline="mean")
    with pytest.raises(BaselineError, match="several background rows"):
        Lime(net)(x, target=0, background=torch.randn(1, 6))
    with pytest.raises(OptionError, match="kernel_width must be positive"):
        Lime(net, kernel_width=0)
    with pytest.raises(OptionError, match="option alpha=-1 is outside >= 0"):
        Lime(net, alpha=-1)
    with pytest.raises(OptionError, match="option n_samples=1 is outside >= 2"):
        Lime(net, n_samples=1)
    with pytest.raises(OptionError, match="option groups=.* should be FeatureGroups"):
        Lime(net)(x, target=0, groups=np.zeros(6))
    # with groups= a table is perturbed by replacing columns with a baseline
    g = FeatureGroups(2, ["a", "b"], "columns", labels=torch.tensor([[0, 0, 0, 1, 1, 1]]))
    e = Lime(net, n_samples=100)(x, target=0, groups=g, seed=0, baseline=0.0)
    assert e.extras["group_values"].shape == (2, 2)


@pytest.mark.parametrize("train", [False, True])
def test_model_unchanged(train):
    net = mlp(n_in=6)
    net.train(train)
    before = snapshot(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        Lime(net, n_samples=50)(torch.randn(2, 6), target=0, background=torch.randn(20, 6), seed=0)
    assert_unchanged(net, before)
    bad = nn.Sequential(nn.Linear(6, 6), Raises())
    bad.train(train)
    before = snapshot(bad)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        Lime(bad, n_samples=50)(torch.randn(2, 6), target=None, background=torch.randn(20, 6), seed=0)
    assert_unchanged(bad, before)


def test_registered():
    info = {m.name: m for m in uv.methods()}
    assert "lime" in info and info["lime"].stochastic and not info["lime"].needs_gradients
