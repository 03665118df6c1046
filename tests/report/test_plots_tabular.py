"""Waterfall, beeswarm and dependence plots show the explanation's numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import unveil as uv  # noqa: E402
from unveil.core.explanation import Explanation  # noqa: E402
from unveil.errors import InputError, OptionError  # noqa: E402
from unveil.report import (  # noqa: E402
    beeswarm_layout,
    plot_beeswarm,
    plot_dependence,
    plot_waterfall,
    waterfall_steps,
)

NAMES = ["age", "income", "debt", "rate", "tenure", "score"]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture
def linear_ig() -> Explanation:
    """IG from zeros on a linear model: values are (x - 0) * w and add up to f(x) - f(0)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 1).eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, -1.5, 0.8, -0.3, 0.1, 0.05]]))
        model.bias.fill_(0.7)
    x = torch.tensor([[3.0, 2.0, 1.5, 4.0, 2.5, 1.0],
                      [1.0, 0.5, 2.0, 1.0, 3.0, 2.0],
                      [2.0, 1.0, 0.5, 3.0, 1.0, 4.0]])
    exp = uv.explain(model, x, method="integrated_gradients", target=0, baseline="zeros")
    exp.feature_names = list(NAMES)
    return exp


def test_waterfall_ends_at_f_x_when_complete(linear_ig: Explanation) -> None:
    e = linear_ig
    w = waterfall_steps(e, 0, top_k=4)
    fx, f0 = float(e.outputs[0]), float(e.baseline_outputs[0])
    assert abs(f0 - 0.7) < 1e-5 and abs(fx - f0) > 1.0  # the path is not trivially short
    assert w.end == pytest.approx(fx, abs=1e-4)
    ax = plot_waterfall(e, 0, top_k=4)
    bars = ax.patches
    top = bars[0]  # drawn first: the largest contribution, on the top row
    assert top.get_y() == max(b.get_y() for b in bars)
    assert top.get_x() + top.get_width() == pytest.approx(fx, abs=1e-4)  # the path's last point
    bottom = bars[-1]  # "N other features" starts at the base value
    assert min(bottom.get_x(), bottom.get_x() + bottom.get_width()) == pytest.approx(
        min(f0, f0 + w.contributions[-1]), abs=1e-6)


def test_waterfall_labels_order_and_texts(linear_ig: Explanation) -> None:
    e = linear_ig
    ax = plot_waterfall(e, 0, top_k=4)
    # contributions x*w of row 0: age 6.0, income -3.0, debt 1.2, rate -1.2, tenure .25, score .05
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["age = 3", "income = 2", "debt = 1.5", "3 other features"]
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx([6.0, -3.0, 1.2, -1.2 + 0.25 + 0.05], abs=1e-4)
    texts = [t.get_text().strip() for t in ax.texts]
    assert "f(baseline) = 0.7" in texts
    assert f"f(x) = {float(e.outputs[0]):.4g}" in texts
    assert "+6" in texts and "\u22123" in texts  # each bar's contribution, signed
    assert not any(t.startswith("attributions end at") for t in texts)  # no gap to report
    assert ax.get_xlabel() == "model output (class 0)"
    again = waterfall_steps(e, 0, top_k=4).plot()  # the computed steps draw the same figure
    assert [t.get_text() for t in again.get_yticklabels()] == labels
    assert [p.get_width() for p in again.patches] == widths


def test_waterfall_states_a_gap_without_completeness() -> None:
    e = Explanation(values=np.array([[1.0, -0.5]]), inputs=np.array([[10.0, 20.0]]), method="saliency",
                    outputs=np.array([2.0]), baseline_outputs=np.array([0.0]), feature_names=["a", "b"])
    ax = plot_waterfall(e)
    texts = [t.get_text().strip() for t in ax.texts]
    assert "attributions end at 0.5 (gap +1.5)" in texts and "f(x) = 2" in texts
    with pytest.raises(InputError, match="top_k must be at least 2"):
        waterfall_steps(e, top_k=1)
    e.baseline_outputs = None  # no base recorded: the path is made to end at f(x), and says so
    w = waterfall_steps(e)
    assert w.base == pytest.approx(1.5) and w.end == pytest.approx(2.0)
    assert w.base_name == "f(x) \u2212 sum of attributions"


def test_waterfall_names_a_background_mean() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).eval()
    x, bg = torch.randn(2, 4), torch.randn(16, 4)
    e = uv.explain(model, x, method="exact_shapley", target=0, background=bg)
    w = waterfall_steps(e, 1)
    assert w.base_name == "E[f(background)]"
    assert w.base == pytest.approx(float(model(bg).mean().detach()), abs=1e-5)
    assert w.end == pytest.approx(float(e.outputs[1]), abs=1e-5)  # efficiency: the path ends at f(x)
    assert abs(w.end - w.base) > 1e-3


def test_waterfall_through_explanation_plot(linear_ig: Explanation) -> None:
    fig, ax = plt.subplots()
    out = linear_ig.plot(index=2, ax=ax, kind="waterfall", top_k=3)
    assert out is ax
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["age = 2", "income = 1", "4 other features"]  # 4.0 and -1.5 lead in row 2
    assert ax.get_title() == "Integrated Gradients · class 0"
    with pytest.raises(OptionError, match="kind must be one of 'bar', 'waterfall'.*Did you mean 'waterfall'"):
        linear_ig.plot(kind="waterfal")


def test_beeswarm_rows_and_colours(linear_ig: Explanation) -> None:
    e = linear_ig
    lay = beeswarm_layout(e, max_display=4)
    mean_abs = np.abs(e.values).mean(axis=0)
    assert lay.columns == list(np.argsort(-mean_abs)[:4]) and lay.other == 2
    ax = e.plot(kind="beeswarm", max_display=4)
    assert [t.get_text() for t in ax.get_yticklabels()] == [NAMES[j] for j in lay.columns]
    top = ax.collections[0]  # the top row's dots: x at the attribution, y around the top row
    j = lay.columns[0]
    offs = top.get_offsets()
    assert np.allclose(np.sort(offs[:, 0]), np.sort(e.values[:, j]), atol=1e-6)
    assert np.all(np.abs(offs[:, 1] - 3) <= 0.4 + 1e-9)
    ax.figure.canvas.draw()  # colours are mapped when drawn
    # colour follows the feature's value: the highest value gets the colour map's top colour
    colours = top.get_facecolors()
    hi = int(np.argmax(e.inputs[:, j]))
    lo = int(np.argmin(e.inputs[:, j]))
    assert np.allclose(colours[hi][:3], plt.get_cmap("coolwarm")(1.0)[:3], atol=1e-3)
    assert np.allclose(colours[lo][:3], plt.get_cmap("coolwarm")(0.0)[:3], atol=1e-3)
    cbar = ax.figure.axes[-1]
    assert [t.get_text() for t in cbar.get_yticklabels()] == ["low", "high"]
    assert cbar.get_ylabel() == "feature value"
    assert ax.get_xlabel() == "attribution (2 columns with smaller mean |attribution| not shown)"


def test_dependence_points_are_value_and_attribution(linear_ig: Explanation) -> None:
    e = linear_ig
    ax = plot_dependence(e, "debt", color_by="age")
    pts = ax.collections[0].get_offsets()
    assert np.allclose(pts, np.c_[e.inputs[:, 2], e.values[:, 2]], atol=1e-6)
    assert np.allclose(ax.collections[0].get_array(), e.inputs[:, 0])  # coloured by age
    assert ax.figure.axes[-1].get_ylabel() == "age"
    assert ax.get_xlabel() == "debt" and ax.get_ylabel() == "attribution of debt"
    ax2 = e.plot(kind="dependence", feature=1)
    assert ax2.get_xlabel() == "income"
    with pytest.raises(InputError, match="no column named 'dbt'. Did you mean 'debt'"):
        plot_dependence(e, "dbt")


def test_many_row_plots_need_one_value_per_column() -> None:
    e = Explanation(values=np.zeros((2, 3, 4, 4)), inputs=np.zeros((2, 3, 4, 4)), method="saliency",
                    modality="image")
    with pytest.raises(InputError, match=r"needs one attribution per column of a table \(N, F\)"):
        plot_beeswarm(e)
