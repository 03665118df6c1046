"""Matplotlib drawings show the numbers of the explanation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from unveil.core.explanation import Explanation  # noqa: E402
from unveil.errors import InputError  # noqa: E402
from unveil.report import plot_explanation  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_image_heatmap_is_the_channel_sum() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 3, 8, 8))
    e = Explanation(values=v, inputs=rng.random((2, 3, 8, 8)), method="saliency", modality="image",
                    targets=np.array([0, 4]), class_names=[f"c{k}" for k in range(5)])
    ax = plot_explanation(e, index=1)
    images = ax.get_images()
    assert len(images) == 2  # the input, then the map over it
    assert np.allclose(images[1].get_array(), v[1].sum(0))
    lo, hi = images[1].get_clim()
    assert hi > 0 and lo == -hi  # symmetric around zero: white means no attribution
    assert ax.get_title() == "Saliency · c4"


def test_bars_follow_the_attributions_and_reuse_ax() -> None:
    e = Explanation(values=np.array([[0.3, -0.9, 0.1]]), inputs=np.ones((1, 3)),
                    method="integrated_gradients", feature_names=["a", "b", "c"])
    fig, ax = plt.subplots()
    out = plot_explanation(e, ax=ax, top_k=2)
    assert out is ax
    widths = [p.get_width() for p in ax.patches]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert widths == [0.3, -0.9] and labels == ["a", "b"]  # largest |value| drawn on top


def test_tokens_and_sequences_draw() -> None:
    t = Explanation(values=np.array([[0.5, -0.2, 0.1]]), inputs=np.array([[1, 2, 3]]),
                    method="saliency", modality="text", meta={"tokens": ["the", "cat", "sat"]})
    ax = t.plot()
    assert [x.get_text() for x in ax.texts] == ["the", "cat", "sat"]
    s = Explanation(values=np.ones((1, 2, 20)), inputs=np.zeros((1, 2, 20)), method="occlusion",
                    modality="sequence")
    ax = plot_explanation(s)
    assert len(ax.lines) == 2


def test_index_out_of_range() -> None:
    e = Explanation(values=np.zeros((2, 3)), inputs=np.zeros((2, 3)), method="saliency")
    with pytest.raises(InputError, match="index 5 is out of range for an explanation of 2 samples"):
        plot_explanation(e, index=5)
