"""Turn an :class:`~unveil.Explanation` into things to show: per-element maps, coloured images,
ranked table rows and coloured tokens. Pure numpy (plus torch for resizing); no plotting library.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from .png import data_uri, upscale

__all__ = [
    "MAG",
    "NEG",
    "POS",
    "Row",
    "display_kind",
    "element_values",
    "feature_table",
    "image_rgb",
    "image_tiles",
    "map_for_agreement",
    "robust_scale",
    "sequence_tile",
    "token_spans",
]

POS = np.array([0.84, 0.19, 0.15])  # red: pushes towards the explained class
NEG = np.array([0.16, 0.42, 0.75])  # blue: pushes against it
MAG = np.array([0.42, 0.24, 0.60])  # purple: magnitude only (maps without a direction)


def display_kind(exp: Explanation) -> str:
    """``"image"``, ``"table"``, ``"text"`` or ``"sequence"``: how the explanation is drawn."""
    inputs = np.asarray(exp.inputs)
    if exp.modality == "text" or not np.issubdtype(inputs.dtype, np.floating):
        return "text"
    if exp.modality == "image" or inputs.ndim == 4:
        return "image"
    if inputs.ndim == 2:
        return "table"
    return "sequence"


def _expand_groups(exp: Explanation, values: np.ndarray) -> np.ndarray | None:
    g = exp.groups or {}
    n_groups = int(g.get("n_groups", -1))
    if values.ndim != 2 or values.shape[1] != n_groups:
        return None
    if "labels" in g:
        lab = np.asarray(g["labels"]).astype(np.int64)
        lab = np.broadcast_to(lab, (values.shape[0], *lab.shape[1:])) if lab.shape[0] == 1 else lab
        flat = lab.reshape(lab.shape[0], -1)
        out = np.take_along_axis(values, np.clip(flat, 0, None), axis=1) * (flat >= 0)
        return np.asarray(out.reshape(lab.shape), dtype=np.float64)
    if "masks" in g:
        m = np.asarray(g["masks"]).astype(np.float64)
        out = np.einsum("ng,gd->nd", values, m.reshape(m.shape[0], -1))
        return np.asarray(out.reshape(values.shape[0], *m.shape[1:]))
    return None


def element_values(exp: Explanation) -> np.ndarray:
    """Attributions on the input elements, float64 (N, *sample_shape) where possible.

    Group-level values ``(N, G)`` are spread onto their groups' elements; maps at another
    resolution are left as they are (the image drawing resizes them).
    """
    v = np.asarray(exp.values, dtype=np.float64)
    inputs = np.asarray(exp.inputs)
    if v.shape == inputs.shape:
        return v
    expanded = _expand_groups(exp, v)
    return v if expanded is None else expanded


def robust_scale(v: np.ndarray) -> float:
    """A colour scale for ``|v|``: its 99.5th percentile (the max if that is 0; 1 if all 0)."""
    a = np.abs(v[np.isfinite(v)])
    if a.size == 0:
        return 1.0
    s = float(np.percentile(a, 99.5))
    if s <= 0:
        s = float(a.max())
    return s if s > 0 else 1.0


def _heat2d(values: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """One (H, W) map from a sample's values: channels summed, resized to the image."""
    v = values
    if v.ndim == 3:
        v = v.sum(axis=0)
    if v.ndim == 1 and v.size == hw[0] * hw[1]:
        v = v.reshape(hw)
    if v.ndim != 2:
        raise ValueError(f"cannot draw values of shape {values.shape} over a {hw} image")
    if v.shape != hw:
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None, None]
        v = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.asarray(v, dtype=np.float64)


def image_rgb(x: np.ndarray) -> np.ndarray:
    """(C, H, W) input -> (H, W, 3) in [0, 1] (min-max per image; grey for 1 channel)."""
    x = np.asarray(x, dtype=np.float64)
    img = x[:3].transpose(1, 2, 0) if x.shape[0] == 3 else np.repeat(x.mean(0)[:, :, None], 3, 2)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def colour_map(heat: np.ndarray, scale: float, *, signed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) colours and (H, W) opacity of a map: red/blue for a signed map, one purple
    hue for a magnitude (``signed=False``), opacity ``|heat| / scale``."""
    r = np.clip(heat / scale, -1.0, 1.0)
    col = np.where(r[..., None] >= 0, POS, NEG) if signed else np.broadcast_to(MAG, (*r.shape, 3))
    return col, np.abs(r)


def image_tiles(exp: Explanation, i: int, *, min_side: int = 128,
                signed: bool = True) -> tuple[str, str, np.ndarray]:
    """Data URIs of sample ``i``'s input and its map over the input, and the (H, W) map
    (the map's colour scale is ``robust_scale`` of it; ``signed=False`` draws a magnitude)."""
    x = np.asarray(exp.inputs[i])
    if x.ndim == 2:
        x = x[None]
    img = image_rgb(x)
    heat = _heat2d(element_values(exp)[i], img.shape[:2])
    col, alpha = colour_map(heat, robust_scale(heat), signed=signed)
    a = (0.85 * alpha)[..., None]
    base = 0.2 + 0.6 * img  # dimmed so that the colours stand out
    over = base * (1 - a) + col * a
    return data_uri(upscale(img, min_side)), data_uri(upscale(over, min_side)), heat


def sequence_tile(exp: Explanation, i: int, *, height: int = 48, signed: bool = True) -> str:
    """A data URI drawing sample ``i``'s signal (one band per channel) over its attributions."""
    x = np.asarray(exp.inputs[i], dtype=np.float64)
    v = element_values(exp)[i]
    x2 = x.reshape(-1, x.shape[-1])
    v2 = v.reshape(-1, v.shape[-1]) if v.shape == x.shape else np.zeros_like(x2)
    col, alpha = colour_map(v2, robust_scale(v2), signed=signed)
    bands = []
    for c in range(x2.shape[0]):
        band = 1 - alpha[c][None, :, None] * 0.7 * (1 - col[c][None])
        band = np.repeat(band, height, axis=0)
        s = x2[c]
        lo, hi = float(s.min()), float(s.max())
        y = ((hi - s) / (hi - lo) * (height - 1)).astype(int) if hi > lo else np.full(s.size, height // 2)
        band[y, np.arange(s.size)] = 0.1
        bands.append(band)
    img = np.concatenate(bands, axis=0)
    f = max(1, 400 // max(1, img.shape[1]))
    return data_uri(np.repeat(img, f, axis=1))


@dataclass
class Row:
    """One feature of a table explanation."""

    name: str
    value: float  # the input's value
    attribution: float


def _names(exp: Explanation, n: int) -> list[str]:
    names = exp.feature_names
    if names is not None and len(names) == n:
        return [str(s) for s in names]
    return [f"feature {j}" for j in range(n)]


def feature_table(exp: Explanation, i: int, *, top_k: int | None = 10) -> list[Row]:
    """Sample ``i``'s features ranked by ``|attribution|`` (group names for group values)."""
    v = np.asarray(exp.values, dtype=np.float64)[i].reshape(-1)
    x = np.asarray(exp.inputs, dtype=np.float64)[i].reshape(-1)
    g = exp.groups or {}
    if v.size != x.size and v.size == int(g.get("n_groups", -1)):
        names = [str(s) for s in g.get("names", [])] or [f"group {j}" for j in range(v.size)]
        vals = np.full(v.size, np.nan)
    else:
        v = element_values(exp)[i].reshape(-1)
        names, vals = _names(exp, v.size), x
    order = np.argsort(-np.abs(v), kind="stable")[: top_k or None]
    return [Row(names[j], float(vals[j]), float(v[j])) for j in order]


def _token_strings(exp: Explanation, i: int, n: int) -> list[str]:
    toks: Any = exp.meta.get("tokens") if isinstance(exp.meta, dict) else None
    if isinstance(toks, list) and toks and isinstance(toks[0], list):
        toks = toks[i] if i < len(toks) else None
    if isinstance(toks, list) and len(toks) == n:
        return [str(t) for t in toks]
    if exp.feature_names is not None and len(exp.feature_names) == n:
        return [str(t) for t in exp.feature_names]
    ids = np.asarray(exp.inputs[i]).reshape(-1)
    return [f"#{int(t)}" for t in ids]


def token_values(exp: Explanation, i: int, *, merge: bool = True) -> tuple[list[str], np.ndarray]:
    """Tokens of sample ``i`` and one attribution per token (embedding dims summed); with token
    strings known and ``merge``, subword pieces are merged into words (their values summed) and
    special tokens such as ``[CLS]`` and padding are left out."""
    v = element_values(exp)[i]
    n = int(np.asarray(exp.inputs[i]).reshape(-1).size)
    v = v.reshape(n, -1).sum(axis=1) if v.size % max(n, 1) == 0 else v.reshape(-1)[:n]
    toks = _token_strings(exp, i, n)
    if merge and n and toks[0] != f"#{int(np.asarray(exp.inputs[i]).reshape(-1)[0])}":
        from ..text.merge import merge_subwords

        words, wv = merge_subwords(toks, v)  # pieces summed into words; [CLS], padding left out
        if words:
            return words, np.asarray(wv, dtype=np.float64)
    return toks, v


def token_spans(exp: Explanation, i: int, *, signed: bool = True) -> str:
    """HTML: sample ``i``'s tokens with a red (for) or blue (against) background, or one hue
    for a magnitude (``signed=False``)."""
    toks, v = token_values(exp, i)
    s = robust_scale(v)
    out = []
    for t, a in zip(toks, v):
        col, alpha = colour_map(np.array([a]), s, signed=signed)
        r, g, b = (col[0] * 255).astype(int)
        out.append(
            f'<span class="uv-tok" title="{a:+.4g}" style="background:rgba({r},{g},{b},'
            f'{0.75 * float(alpha[0]):.2f})">{html.escape(t)}</span>'
        )
    return " ".join(out)


def map_for_agreement(exp: Explanation, i: int, *, cells: int = 16) -> np.ndarray:
    """A flat ``|attribution|`` vector of sample ``i`` for comparing methods: images are summed
    over channels, resized to the input and average-pooled to at most ``cells`` x ``cells``
    (maps at different resolutions then compare by region); text to one value per token."""
    kind = display_kind(exp)
    if kind == "image":
        x = np.asarray(exp.inputs[i])
        hw = (x.shape[-2], x.shape[-1])
        heat = np.abs(_heat2d(element_values(exp)[i], hw))
        fh, fw = max(1, hw[0] // cells), max(1, hw[1] // cells)
        h2, w2 = hw[0] // fh * fh, hw[1] // fw * fw
        pooled = heat[:h2, :w2].reshape(h2 // fh, fh, w2 // fw, fw).mean(axis=(1, 3))
        return np.asarray(pooled, dtype=np.float64).ravel()
    if kind == "text":
        return np.asarray(np.abs(token_values(exp, i)[1]), dtype=np.float64)
    return np.asarray(np.abs(element_values(exp)[i]), dtype=np.float64).reshape(-1)
