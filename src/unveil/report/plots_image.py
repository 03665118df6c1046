"""Image attributions drawn the way Captum's ``visualize_image_attr`` and pytorch-grad-cam's
``show_cam_on_image`` draw them: a heat map alone, a heat map blended over the grey input, or an
RGB overlay of the coloured map on the input; each with a colour bar whose range is stated
(symmetric around zero for signed maps).

:func:`overlay` is the array form: ``(1 - alpha) * image + alpha * cmap(cam)`` in RGB, in [0, 1].
:func:`image_map` computes what is drawn (the map with its sign and colour range) as an
:class:`ImageMap`, whose ``.plot(ax=None, kind=...)`` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..errors import InputError
from ._mpl import check_choice, check_index, fmt, new_axes, pyplot
from .render import _heat2d, element_values, image_rgb

__all__ = ["IMAGE_KINDS", "SIGNS", "ImageMap", "image_map", "overlay", "plot_image_attribution"]

IMAGE_KINDS = ("blended", "heatmap", "overlay")
SIGNS = ("all", "positive", "negative", "absolute")
_CMAPS = {"all": "bwr", "positive": "Reds", "negative": "Blues_r", "absolute": "jet"}
_SIGN_TEXT = {"all": "attribution", "positive": "positive attribution",
              "negative": "negative attribution", "absolute": "|attribution|"}


def _hwc(image: Any) -> np.ndarray:
    """(H, W), (H, W, 1|3) or (1|3, H, W) -> (H, W, 3) float64."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim == 3 and a.shape[-1] not in (1, 3) and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise InputError(f"image must be (H, W), (H, W, 3) or (3, H, W), got shape {np.shape(image)}")
    return np.repeat(a, 3, axis=2) if a.shape[-1] == 1 else a


def _colormap(cmap: Any) -> Any:
    return pyplot().get_cmap(cmap) if isinstance(cmap, str) else cmap


def overlay(image: Any, cam: Any, *, alpha: float = 0.5, cmap: Any = "jet") -> np.ndarray:
    """Blend a map over an image in RGB: ``(1 - alpha) * image + alpha * cmap(cam)``.

    Parameters
    ----------
    image : array
        (H, W), (H, W, 3) or (3, H, W), values in [0, 1].
    cam : array
        (h, w) map with values in [0, 1] (e.g. ``cam / cam.max()``); resized bilinearly to the
        image when its size differs.
    alpha : float
        Weight of the coloured map (pytorch-grad-cam's ``1 - image_weight``; default 0.5).
    cmap : str or matplotlib colormap
        Colours of the map (default ``"jet"``, as ``show_cam_on_image``).

    Returns
    -------
    ndarray
        (H, W, 3) float64 in [0, 1]. Unlike ``show_cam_on_image`` the result is not divided by
        its maximum: a convex blend of two [0, 1] images stays in [0, 1], and colours keep the
        same meaning from one image to the next.
    """
    img = _hwc(image)
    m = np.asarray(cam, dtype=np.float64)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha!r}")
    if not (np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0):
        raise InputError("image values must be finite and in [0, 1]; scale the image first")
    if m.ndim != 2 or not (np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0):
        raise InputError(f"cam must be an (h, w) map with values in [0, 1], got shape {m.shape} "
                         "(normalise it first, e.g. cam / cam.max())")
    m = _heat2d(m, (img.shape[0], img.shape[1])).clip(0.0, 1.0)
    heat = np.asarray(_colormap(cmap)(m), dtype=np.float64)[..., :3]
    return np.asarray((1.0 - alpha) * img + alpha * heat, dtype=np.float64)


@dataclass
class ImageMap:
    """What an image plot shows: the input (H, W, 3) in [0, 1], the map with the sign kept,
    and the colour range ``(vmin, vmax)`` (symmetric for ``sign="all"``)."""

    image: np.ndarray
    heat: np.ndarray
    vmin: float
    vmax: float
    sign: str

    def clipped(self) -> str:
        """``"neither"``, ``"min"``, ``"max"`` or ``"both"``: which ends of the range clip values."""
        low = bool(np.any(self.heat < self.vmin)) and self.sign in ("all", "negative")
        high = bool(np.any(self.heat > self.vmax)) and self.sign != "negative"
        return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get((low, high), "both")

    def unit(self) -> np.ndarray:
        """The map scaled to [0, 1] over the colour range (values beyond it clipped)."""
        return np.asarray((np.clip(self.heat, self.vmin, self.vmax) - self.vmin) / (self.vmax - self.vmin))

    def plot(self, ax: Any = None, *, kind: str = "blended", alpha: float = 0.5, cmap: Any = None,
             colorbar: bool = True, title: str | None = None) -> Any:
        """Draw this map (see :func:`plot_image_attribution`); returns the matplotlib Axes."""
        return _draw(self, ax, kind, alpha, cmap, colorbar, title)


def image_map(exp: Explanation, index: int = 0, *, sign: str = "all", outlier_perc: float = 2.0) -> ImageMap:
    """Sample ``index``'s map (channels summed, resized to the input) keeping the ``sign``
    asked for, and its colour range: ``±`` the ``100 - outlier_perc`` percentile of ``|map|``
    (as Captum: by default the top 2 % saturate, so that one extreme pixel does not wash out
    the rest; ``outlier_perc=0`` makes the range reach the largest value)."""
    check_choice("sign", sign, SIGNS)
    if not 0.0 <= outlier_perc < 100.0:
        raise InputError(f"outlier_perc must be in [0, 100), got {outlier_perc!r}")
    i = check_index(exp, index)
    x = np.asarray(exp.inputs[i])
    if x.ndim == 2:
        x = x[None]
    img = image_rgb(x)
    heat = _heat2d(element_values(exp)[i], img.shape[:2])
    heat = {"all": heat, "positive": np.maximum(heat, 0.0), "negative": np.minimum(heat, 0.0),
            "absolute": np.abs(heat)}[sign]
    a = np.abs(heat[np.isfinite(heat)])
    s = float(np.percentile(a, 100.0 - outlier_perc)) if a.size else 0.0
    s = s if s > 0 else 1.0
    lo, hi = {"all": (-s, s), "positive": (0.0, s), "negative": (-s, 0.0), "absolute": (0.0, s)}[sign]
    return ImageMap(img, heat, lo, hi, sign)


def plot_image_attribution(
    exp: Explanation, index: int = 0, ax: Any = None, *, kind: str = "blended", sign: str = "all",
    alpha: float = 0.5, cmap: Any = None, outlier_perc: float = 2.0, colorbar: bool = True,
    title: str | None = None,
) -> Any:
    """Draw sample ``index``'s map over its image and return the Axes.

    Parameters
    ----------
    kind : "blended", "heatmap" or "overlay"
        ``"heatmap"``: the map alone; ``"blended"``: the map (opacity ``alpha``) over the input
        in grey (Captum's ``blended_heat_map``); ``"overlay"``: :func:`overlay` of the input in
        colour and the coloured map, an RGB image (pytorch-grad-cam's ``show_cam_on_image``).
    sign : "all", "positive", "negative" or "absolute"
        Which part of the map is drawn; ``"all"`` keeps the sign on a colour range symmetric
        around zero (white is no attribution).
    cmap : colour map; default ``bwr`` (all), ``Reds`` (positive), ``Blues_r`` (negative),
        ``jet`` (absolute).
    outlier_perc : the top percent of ``|map|`` beyond the colour range, drawn in the end
        colours (default 2, as Captum; 0: the range reaches the largest value).
    colorbar : whether to draw the colour bar; its ticks state the range, and an arrow at an
        end says that values beyond it were clipped.
    """
    check_choice("kind", kind, IMAGE_KINDS)
    im = image_map(exp, index, sign=sign, outlier_perc=outlier_perc)
    return im.plot(ax, kind=kind, alpha=alpha, cmap=cmap, colorbar=colorbar, title=title)


def _draw(im: ImageMap, ax: Any, kind: str, alpha: float, cmap: Any, colorbar: bool, title: str | None) -> Any:
    check_choice("kind", kind, IMAGE_KINDS)
    plt = pyplot()
    cm = _colormap(_CMAPS[im.sign] if cmap is None else cmap)
    ax = new_axes(ax, (4.6, 4.0))
    norm = plt.Normalize(im.vmin, im.vmax)
    if kind == "overlay":
        ax.imshow(overlay(im.image, im.unit(), alpha=alpha, cmap=cm), interpolation="nearest")
        mappable: Any = plt.cm.ScalarMappable(norm=norm, cmap=cm)
    else:
        if kind == "blended":
            ax.imshow(im.image.mean(axis=2), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        mappable = ax.imshow(im.heat, cmap=cm, norm=norm, interpolation="nearest",
                             alpha=alpha if kind == "blended" else None)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ticks = [im.vmin, 0.0, im.vmax] if im.sign == "all" else [im.vmin, im.vmax]
        cb = ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04, ticks=ticks, extend=im.clipped())
        cb.ax.set_yticklabels([fmt(t) if t else "0" for t in ticks])
        cb.set_label(_SIGN_TEXT[im.sign])
    if title is not None:
        ax.set_title(title)
    return ax
