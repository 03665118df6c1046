"""HTML for concept results: CRP heat maps per concept with names and reference examples, and
discovered concepts with their importance and top patches. Self-contained (base64 PNG, inline
styles, no script, no external resource)."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import numpy as np

from .html import CSS, bars_html, colour_bar, document, fmt
from .png import data_uri, upscale
from .render import Row, colour_map, image_rgb, robust_scale

if TYPE_CHECKING:
    from ..concepts.crp import ConceptReferences, ConceptRelevance
    from ..concepts.discovery import ConceptDiscovery

__all__ = ["concept_discovery_html", "concept_relevance_html", "heat_uri", "image_uri", "page"]


def page(body: str, title: str) -> str:
    """A standalone page around a fragment."""
    return document(f"<h1>{escape(title)}</h1>{body}", title)


def _as_image(x: np.ndarray) -> np.ndarray | None:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    return a if a.ndim == 3 else None


def image_uri(x: np.ndarray, *, min_side: int = 96) -> str | None:
    """A data URI of one (C, H, W) input, or ``None`` if it is not an image."""
    a = _as_image(x)
    if a is None or min(a.shape[1:]) < 1:
        return None
    return data_uri(upscale(image_rgb(a), min_side))


def heat_uri(x: np.ndarray, heat: np.ndarray, *, scale: float | None = None, min_side: int = 96) -> str | None:
    """A data URI of a relevance map drawn over its input (red for, blue against)."""
    a = _as_image(x)
    if a is None:
        return None
    h = np.asarray(heat, dtype=np.float64)
    h = h.sum(axis=0) if h.ndim == 3 else h
    if h.shape != a.shape[1:]:
        return None
    img = image_rgb(a)
    col, alpha = colour_map(h, scale if scale else robust_scale(h), signed=True)
    w = (0.85 * alpha)[..., None]
    return data_uri(upscale((0.2 + 0.6 * img) * (1 - w) + col * w, min_side))


def _fig(uri: str | None, caption: str, extra: str = "") -> str:
    if uri is None:
        return f'<div class="uv-block">{escape(caption)}</div>'
    return (f'<figure><img src="{uri}" alt="{escape(caption)}" style="width:96px">'
            f"<figcaption>{escape(caption)}{extra}</figcaption></figure>")


def _references_html(refs: ConceptReferences) -> str:
    items = []
    for q, i in enumerate(refs.indices.tolist()):
        crop = refs.patches[q] if refs.patches is not None and q < len(refs.patches) else refs.inputs[q]
        items.append(_fig(image_uri(crop, min_side=64), f"row {i}: {fmt(float(refs.values[q]))}"))
    how = "relevance" if refs.mode == "relevance" else "activation"
    return (f'<div class="uv-muted">reference examples by {how} maximisation</div>'
            f'<div class="uv-maps">{"".join(items)}</div>')


def concept_relevance_html(res: ConceptRelevance, *, max_rows: int = 4) -> str:
    """Per row: the input, the concepts' relevance at the layer (bars) and each concept's
    conditional heat map, with its reference examples when computed."""
    refs = {tuple(r.channels): r for r in res.references}
    out = [f"<style>{CSS}</style><div class='uv' data-testid='concept-relevance'>",
           f"<h3>Concept relevance at layer {escape(res.layer)}</h3>",
           "<p class='uv-muted'>Each heat map is the input relevance that flows through one concept "
           "(channel set) of the layer (CRP, Achtibat et al. 2023); over all channels they sum to "
           f"the LRP map when every path of the network passes the layer. Composite: {escape(res.composite)}.</p>"]
    n = min(len(res), max_rows)
    for i in range(n):
        x = res.inputs[i]
        maps = res.heatmaps[i, : len(res.concepts[i])]
        scale = robust_scale(np.asarray(maps).sum(axis=1) if maps.ndim == 4 else np.asarray(maps))
        figs = [_fig(image_uri(x), "input")]
        for j, chans in enumerate(res.concepts[i]):
            r = float(res.channel_relevance[i, chans].sum())
            figs.append(_fig(heat_uri(x, maps[j], scale=scale), res.concept_name(chans),
                             f"<br><span class='uv-muted'>R = {fmt(r)}</span>"))
        top = res.top(i, 8)
        bars = bars_html([Row(res.concept_name([c]), float("nan"), v) for c, v in top])
        out.append(f"<div class='uv-sample'><h4>row {i}: class {escape(res.class_name(i))} "
                   f"(score {fmt(float(res.scores[i]))})</h4><div class='uv-maps'>{''.join(figs)}</div>"
                   f"<div class='uv-muted'>{colour_bar(scale, signed=True)}</div>"
                   f"<div class='uv-block'><b>most relevant channels</b>{bars}</div></div>")
    if len(res) > n:
        out.append(f"<p class='uv-muted'>{len(res) - n} more rows not shown.</p>")
    if refs:
        out.append("<h4>Concepts in the data</h4>")
        for key, ref in refs.items():
            out.append(f"<div class='uv-sample'><b>{escape(res.concept_name(list(key)))}</b>"
                       f"{_references_html(ref)}</div>")
    out.append("</div>")
    return "".join(out)


def concept_discovery_html(res: ConceptDiscovery) -> str:
    """The concepts ranked by importance, each with its top patches and rows."""
    out = [f"<style>{CSS}</style><div class='uv' data-testid='concept-discovery'>",
           f"<h3>Concepts discovered at layer {escape(res.layer)}</h3>",
           f"<p class='uv-muted'>{res.n_concepts} concepts by "
           f"{'non-negative matrix factorisation (CRAFT)' if res.method == 'nmf' else 'a sparse autoencoder'}"
           f" of the layer's activations; reconstruction explains {fmt(100 * res.explained_variance)}% of "
           f"their variance and keeps {fmt(100 * res.fidelity)}% of predictions. Importance for class "
           f"{escape(res.class_name)}: "
           f"{'total-order Sobol index (CRAFT)' if res.importance_method == 'sobol' else 'gradient × concept coefficient'}"
           ".</p>"]
    out.append(bars_html([Row(res.concept_name(j), float("nan"), v) for j, v in res.ranking()], signed=res.importance_method != "sobol"))
    for j, imp in res.ranking():
        items = []
        if res.patches is not None:
            for q, p in enumerate(res.patches[j]):
                row = int(res.patch_indices[j, q]) if res.patch_indices is not None else -1
                items.append(_fig(image_uri(p, min_side=64), f"row {row}"))
        rows = [_fig(image_uri(x, min_side=64), f"row {int(i)}")
                for x, i in zip(res.example_inputs[j], res.example_indices[j])]
        out.append(f"<div class='uv-sample'><h4>{escape(res.concept_name(j))} — importance {fmt(imp)}</h4>"
                   + (f"<div class='uv-muted'>top patches</div><div class='uv-maps'>{''.join(items)}</div>" if items else "")
                   + (f"<div class='uv-muted'>top rows</div><div class='uv-maps'>{''.join(rows)}</div>"
                      if any("<img" in r for r in rows) else "")
                   + "</div>")
    out.append("</div>")
    return "".join(out)
