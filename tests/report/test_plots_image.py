"""Image overlays: blended pixels computable by hand, colour bars that state their range."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from unveil.core.explanation import Explanation  # noqa: E402
from unveil.errors import InputError, OptionError  # noqa: E402
from unveil.report import image_map, overlay, plot_image_attribution  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _exp() -> Explanation:
    x = np.zeros((1, 3, 2, 2))
    x[0, 0] = [[0.0, 1.0], [0.5, 0.25]]  # red channel; min-max scaling keeps [0, 1]
    v = np.zeros((1, 3, 2, 2))
    v[0, 0] = [[0.4, -0.8], [0.2, 0.0]]
    v[0, 1] = [[0.2, 0.0], [0.0, 0.1]]  # channels summed: [[0.6, -0.8], [0.2, 0.1]]
    return Explanation(values=v, inputs=x, method="saliency", modality="image")


def test_overlay_blends_by_hand() -> None:
    image = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # (1, 2, 3): red, blue
    cam = np.array([[0.0, 1.0]])
    grey = overlay(image, cam, alpha=0.25, cmap="gray")  # gray colormap: heat = cam in R, G, B
    assert np.allclose(grey, [[[0.75, 0.0, 0.0], [0.25, 0.25, 1.0]]])
    two = ListedColormap([(0.0, 1.0, 0.0), (1.0, 0.0, 1.0)])  # cam 0 -> green, 1 -> magenta
    out = overlay(image, cam, alpha=0.5, cmap=two)
    assert np.allclose(out, [[[0.5, 0.5, 0.0], [0.5, 0.0, 1.0]]])
    chw = overlay(image.transpose(2, 0, 1), cam, alpha=0.5, cmap=two)  # channel-first image
    assert np.allclose(chw, out)


def test_overlay_resizes_and_checks_ranges() -> None:
    out = overlay(np.zeros((4, 4)), np.ones((2, 2)), alpha=1.0, cmap="gray")
    assert out.shape == (4, 4, 3) and np.allclose(out, 1.0)
    with pytest.raises(InputError, match=r"cam must be an \(h, w\) map with values in \[0, 1\]"):
        overlay(np.zeros((2, 2)), np.full((2, 2), 2.0))
    with pytest.raises(InputError, match=r"image values must be finite and in \[0, 1\]"):
        overlay(np.full((2, 2), 3.0), np.zeros((2, 2)))
    with pytest.raises(InputError, match=r"alpha must be in \[0, 1\]"):
        overlay(np.zeros((2, 2)), np.zeros((2, 2)), alpha=1.5)


def test_signed_heatmap_has_a_symmetric_stated_range() -> None:
    e = _exp()
    ax = plot_image_attribution(e, kind="heatmap", sign="all", outlier_perc=0)
    im = ax.get_images()[0]
    assert np.allclose(im.get_array(), [[0.6, -0.8], [0.2, 0.1]])
    assert im.get_clim() == pytest.approx((-0.8, 0.8))  # ±max|v|: white is zero
    cbar = ax.figure.axes[-1]
    assert cbar.get_ylim() == pytest.approx((-0.8, 0.8))
    assert [t.get_text() for t in cbar.get_yticklabels()] == ["-0.8", "0", "0.8"]
    assert cbar.get_ylabel() == "attribution"


def test_sign_modes_keep_their_part() -> None:
    e = _exp()
    pos = image_map(e, sign="positive", outlier_perc=0)
    assert np.allclose(pos.heat, [[0.6, 0.0], [0.2, 0.1]]) and (pos.vmin, pos.vmax) == pytest.approx((0, 0.6))
    neg = image_map(e, sign="negative", outlier_perc=0)
    assert np.allclose(neg.heat, [[0.0, -0.8], [0.0, 0.0]]) and (neg.vmin, neg.vmax) == pytest.approx((-0.8, 0))
    ab = image_map(e, sign="absolute")
    assert np.allclose(ab.heat, [[0.6, 0.8], [0.2, 0.1]])
    ax = e.plot(kind="blended", sign="negative", outlier_perc=0)
    assert ax.figure.axes[-1].get_ylim() == pytest.approx((-0.8, 0.0))
    assert ax.figure.axes[-1].get_ylabel() == "negative attribution"
    grey, heat = ax.get_images()  # the input in grey under the map
    assert np.allclose(grey.get_array(), np.array([[0.0, 1.0], [0.5, 0.25]]) / 3)
    assert heat.get_alpha() == 0.5
    with pytest.raises(OptionError, match="sign must be one of 'all', 'positive', 'negative', 'absolute'"):
        image_map(e, sign="abs")


def test_overlay_kind_shows_the_blend_of_image_and_map() -> None:
    e = _exp()
    ax = e.plot(kind="overlay", sign="all", alpha=0.25, cmap="gray", outlier_perc=0)
    rgb = np.asarray(ax.get_images()[0].get_array())
    image = np.zeros((2, 2, 3))
    image[..., 0] = [[0.0, 1.0], [0.5, 0.25]]
    # the map on [-0.8, 0.8] scaled to [0, 1], in grey, a quarter over three quarters of the input
    unit = (np.array([[0.6, -0.8], [0.2, 0.1]]) + 0.8) / 1.6
    assert np.allclose(rgb, 0.75 * image + 0.25 * unit[..., None], atol=1 / 255)  # a 256-colour table
    assert ax.figure.axes[-1].get_ylim() == pytest.approx((-0.8, 0.8))
    assert ax.get_title() == "Saliency"


def test_outlier_percentile_sets_the_range() -> None:
    v = np.zeros((1, 1, 10, 10))
    v[0, 0].flat[:] = np.arange(100.0)
    e = Explanation(values=v, inputs=np.zeros((1, 1, 10, 10)), method="saliency", modality="image")
    assert image_map(e, outlier_perc=0).vmax == pytest.approx(99.0)
    q98 = float(np.percentile(np.arange(100.0), 98))
    assert image_map(e).vmin == pytest.approx(-q98) and image_map(e).vmax == pytest.approx(q98)  # as Captum
    ax = e.plot(kind="heatmap")
    assert ax.figure.axes[-1].get_ylim() == pytest.approx((-q98, q98))
    assert ax.get_images()[0].colorbar.extend == "max"  # values above the range: an arrow says so
    with pytest.raises(OptionError, match="kind must be one of 'heatmap', 'blended', 'overlay'"):
        e.plot(kind="bar")
