"""Partial dependence / ICE plots, LIME-style local surrogate bars, a fidelity curve that fits."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_wine  # noqa: E402

import unveil as uv  # noqa: E402
from unveil.errors import InputError, OptionError  # noqa: E402
from unveil.report import local_effects, plot_local_surrogate, plot_partial_dependence  # noqa: E402
from unveil.report.plots_surrogate import ice_rows  # noqa: E402
from unveil.surrogate import PartialDependence  # noqa: E402
from unveil.surrogate.local import quartile_borders, quartile_condition  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _pd() -> PartialDependence:
    grid = np.array([0.0, 1.0, 2.0])
    ind = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0], [2.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    return PartialDependence("dose", 0, grid, ind.mean(axis=0), ind, None)


def test_pdp_over_ice_curves() -> None:
    pd = _pd()
    ax = pd.plot(ice=2)
    lines = ax.get_lines()
    assert len(lines) == 3  # two ICE curves (rows 0 and 3, spread over the data), then the mean
    assert np.allclose(lines[0].get_ydata(), [1, 2, 4]) and np.allclose(lines[1].get_ydata(), [5, 5, 5])
    assert np.allclose(lines[-1].get_xdata(), [0, 1, 2])
    assert np.allclose(lines[-1].get_ydata(), [2.0, 2.0, 3.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ICE (2 of 4 rows)", "partial dependence (mean)"]
    assert ax.get_xlabel() == "dose" and ax.get_ylabel() == "model output"
    assert list(ice_rows(10, 3)) == [0, 4, 9] and list(ice_rows(2, 3)) == [0, 1]


def test_centered_ice_and_kinds() -> None:
    ax = plot_partial_dependence(_pd(), centered=True, kind="average")
    (mean,) = ax.get_lines()
    assert np.allclose(mean.get_ydata(), [0.0, 0.0, 1.0])  # mean of (row - row[0])
    assert ax.get_ylabel() == "model output minus its value at 0"
    ax = plot_partial_dependence(_pd(), kind="individual")
    assert len(ax.get_lines()) == 4
    with pytest.raises(OptionError, match="kind must be one of 'both', 'average', 'individual'"):
        plot_partial_dependence(_pd(), kind="ice")


def test_partial_dependence_list_draws_one_panel_per_feature() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).eval()
    X = np.random.default_rng(0).normal(size=(30, 3))
    pds = uv.partial_dependence(model, X, [0, 2], feature_names=["a", "b", "c"], grid_resolution=5)
    axes = plot_partial_dependence(pds)
    assert [a.get_xlabel() for a in axes] == ["a", "c"]
    w = model.weight.detach().numpy()[0]
    mean = axes[1].get_lines()[-1]
    slope = np.diff(mean.get_ydata()) / np.diff(mean.get_xdata())
    assert np.allclose(slope, w[2], atol=1e-5) and abs(w[2]) > 0.05  # a linear model's PDP slope
    with pytest.raises(InputError, match="ax must hold one Axes per feature: 2 features, 1 Axes"):
        plot_partial_dependence(pds, ax=plt.subplots()[1])


def test_quartile_conditions_read_like_lime() -> None:
    b = np.array([1.0, 2.5, 4.0])
    assert quartile_condition("x", 0.5, b) == "x <= 1.00"
    assert quartile_condition("x", 1.0, b) == "x <= 1.00"  # a border belongs to the bin below
    assert quartile_condition("x", 2.1, b) == "1.00 < x <= 2.50"
    assert quartile_condition("x", 9.0, b) == "x > 4.00"
    assert quartile_condition("x", 3.0, np.array([3.0, np.inf, np.inf])) == "x <= 3.00"
    assert quartile_condition("x", 3.5, np.array([3.0, np.inf, np.inf])) == "x > 3.00"


def test_quartile_conditions_agree_with_lime_package() -> None:
    lime_discretize = pytest.importorskip("lime.discretize")
    wine = load_wine()
    X, names = wine.data, list(wine.feature_names)
    ref = lime_discretize.QuartileDiscretizer(X, [], names)
    bins = ref.discretize(X[:20]).astype(int)
    borders = quartile_borders(X)
    for r in range(20):
        ours = [quartile_condition(n, float(X[r, j]), borders[j]) for j, n in enumerate(names)]
        assert ours == [ref.names[j][bins[r, j]] for j in range(len(names))]


def test_local_surrogate_bars_are_labelled_with_conditions() -> None:
    wine = load_wine()
    X, names = wine.data.astype(np.float64), list(wine.feature_names)
    w = np.zeros(13)
    w[[0, 6, 12]] = [1.0, -2.0, 0.003]  # alcohol, flavanoids, proline
    model = torch.nn.Linear(13, 1).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w)[None])
        model.bias.zero_()
    sur = uv.local_surrogate(model, X[0], X=X, feature_names=names, target=0, n_samples=400)
    cond = sur.conditions()
    assert cond[12] == "proline > 985.00" and cond[0] == "alcohol > 13.68"  # X[0]: 1065, 14.23
    eff = local_effects(sur, top_k=3)
    expect = np.abs(w * sur.scale)
    assert [c for c, _ in eff] == [cond[j] for j in np.argsort(-expect)[:3]]
    ax = sur.plot(top_k=3)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [c for c, _ in eff][::-1]  # the largest effect on top
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx([v for _, v in eff][::-1], rel=1e-3)
    assert widths[-1] == pytest.approx(w[6] * sur.scale[6], rel=1e-3)  # flavanoids lead, lowering it
    assert ax.get_xlabel() == "score change per perturbation std"
    plain = uv.local_surrogate(model, X[0], feature_names=names, target=0, n_samples=400)
    assert plain.conditions()[12] == "proline = 1065"  # no reference rows: the value itself
    tree = uv.local_surrogate(model, X[0], X=X, feature_names=names, target=0, n_samples=400, kind="tree")
    with pytest.raises(OptionError, match="a tree local surrogate has rules, not weights"):
        plot_local_surrogate(tree)


def test_fidelity_curve_labels_fit_in_the_figure() -> None:
    from sklearn.tree import DecisionTreeClassifier

    wine = load_wine()
    clf = DecisionTreeClassifier(random_state=0).fit(wine.data, wine.target)
    ax = uv.fidelity_curve(clf, wine.data, values=[1, 2]).plot()
    fig = ax.figure
    fig.canvas.draw()
    box = fig.bbox
    for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
        bb = label.get_window_extent()
        assert label.get_text() and box.x0 <= bb.x0 and bb.x1 <= box.x1 and box.y0 <= bb.y0 and bb.y1 <= box.y1
