"""HTML for explanations and reports: one self-contained page, images embedded as base64 PNG,
styles inline, no script and no external resource of any kind."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import numpy as np

from ..core.explanation import Explanation
from .facts import (
    class_name,
    degenerate_reason,
    is_signed,
)
from .narrative import display_name
from .narrative import pct as pct
from .render import (
    MAG,
    NEG,
    POS,
    Row,
    display_kind,
    element_values,
    feature_table,
    image_tiles,
    robust_scale,
    sequence_tile,
    token_spans,
    token_values,
)

if TYPE_CHECKING:
    pass

__all__ = ["CSS", "bars_html", "colour_bar", "document", "explanation_html", "fmt", "legend_html",
           "maps_html"]

CSS = """
.uv{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;line-height:1.45}
.uv h1{font-size:1.6em;margin:.2em 0}.uv h2{font-size:1.3em;border-bottom:2px solid #dde3ea;
padding-bottom:.2em;margin-top:1.6em}.uv h3{font-size:1.1em;margin-top:1.3em}
.uv h4{font-size:1em;margin:.2em 0 .5em}
.uv .uv-muted{color:#5b6675;font-size:.9em}.uv .uv-sample{border:1px solid #dde3ea;border-radius:8px;
padding:.8em 1em;margin:.8em 0;background:#fbfcfd}
.uv .uv-maps{display:flex;flex-wrap:wrap;gap:.8em;align-items:flex-start}
.uv figure{margin:0;text-align:center;font-size:.85em}.uv figure img{display:block;width:144px;
height:auto;image-rendering:pixelated;border:1px solid #cfd6de;border-radius:4px}
.uv figure img.uv-wide{width:420px}
.uv .uv-bars{border-collapse:collapse;font-size:.82em}.uv .uv-bars td{padding:1px 4px;white-space:nowrap}
.uv .uv-axis{display:flex;width:160px;height:11px}.uv .uv-axis span{flex:1;display:flex}
.uv .uv-axis .uv-l{justify-content:flex-end;border-right:1px solid #8a94a3}
.uv .uv-axis i{display:block;height:100%}.uv .uv-l i{background:#2a6bbf}.uv .uv-r i{background:#d63027}
.uv .uv-block{display:inline-block;vertical-align:top;margin:0 1.2em .6em 0}
.uv .uv-tok{padding:1px 2px;border-radius:3px}.uv .uv-text{margin:.3em 0}
.uv .uv-narrative{margin:.6em 0 .2em}.uv .uv-caution{color:#8a3b00;margin:.2em 0}
.uv table.uv-grid{border-collapse:collapse;font-size:.88em;margin:.4em 0}
.uv table.uv-grid th,.uv table.uv-grid td{border:1px solid #dde3ea;padding:3px 8px;text-align:left}
.uv table.uv-grid th{background:#eef2f6}.uv .uv-ok{color:#1b7a3a}.uv .uv-bad{color:#b3261e}
.uv pre{background:#f3f5f8;padding:.7em;border-radius:6px;overflow:auto;font-size:.82em}
.uv .uv-legend{font-size:.85em;color:#5b6675}.uv .uv-legend b.r{color:#d63027}
.uv .uv-legend b.b{color:#2a6bbf}.uv .uv-legend b.m{color:#6b3d99}.uv .uv-m i{background:#6b3d99}
.uv .uv-cbar{width:144px;margin:.2em auto 0;font-size:.78em;color:#5b6675}
.uv .uv-cbar-g{height:8px;border:1px solid #cfd6de;border-radius:2px}
.uv .uv-cbar-l{display:flex;justify-content:space-between}
.uv .uv-blank{width:144px;height:144px;display:flex;align-items:center;justify-content:center;
background:repeating-linear-gradient(45deg,#f3f5f8,#f3f5f8 6px,#e6eaef 6px,#e6eaef 12px);
border:1px dashed #b3261e;border-radius:4px;color:#b3261e;font-weight:600}
.uv .uv-deg{color:#b3261e;max-width:300px;font-size:.85em}
.uv .uv-summary{border-left:4px solid #2a6bbf;padding:.1em .8em;margin:.2em 0 .8em;background:#fff}
.uv .uv-decision{font-size:1.15em;margin:.3em 0}.uv .uv-reasons{margin:.2em 0 .4em 1.2em;padding:0}
.uv .uv-verdict{margin:.3em 0;font-weight:500}.uv .uv-warn{color:#8a3b00;background:#fff4e5;
border:1px solid #f0c48a;border-radius:4px;padding:.3em .6em;margin:.3em 0}
.uv details{margin:.5em 0}.uv summary{cursor:pointer;color:#2a4f7a}
.uv .uv-term{border-bottom:1px dotted #5b6675;cursor:help}.uv dt{font-weight:600;margin-top:.4em}
.uv dd{margin:0 0 0 1.2em}
"""


def document(body: str, title: str) -> str:
    """A complete HTML page around ``body`` (which must already be escaped HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>body{{margin:1.5em auto;max-width:1200px;"
        f"padding:0 1em}}{CSS}</style></head><body><div class=\"uv\">{body}</div></body></html>\n"
    )


def fmt(v: float | None) -> str:
    """A figure in 3 significant digits (``–`` for a missing one)."""
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.3g}"


def bars_html(rows: list[Row], *, show_value: bool = True, signed: bool = True) -> str:
    """A table of horizontal bars, one per row, scaled to the largest magnitude: red to the
    right and blue to the left for signed values, one purple bar for magnitudes."""
    scale = max((abs(r.attribution) for r in rows), default=0.0) or 1.0
    out = [f'<table class="uv-bars{"" if signed else " uv-m"}">']
    sign = "+" if signed else ""
    for r in rows:
        w = 100.0 * abs(r.attribution) / scale
        left, right = (w, 0.0) if r.attribution < 0 else (0.0, w)
        val = f"<td class=\"uv-muted\">{fmt(r.value)}</td>" if show_value and np.isfinite(r.value) else ""
        out.append(
            f"<tr><td>{escape(r.name)}</td>{val}<td><div class=\"uv-axis\"><span class=\"uv-l\">"
            f"<i style=\"width:{left:.1f}%\"></i></span><span class=\"uv-r\"><i style=\"width:"
            f"{right:.1f}%\"></i></span></div></td><td>{r.attribution:{sign}.3g}</td></tr>"
        )
    return "".join(out) + "</table>"


def _rgb(c: np.ndarray) -> str:
    r, g, b = (np.asarray(c) * 255).round().astype(int)
    return f"rgb({r},{g},{b})"


def colour_bar(scale: float, *, signed: bool) -> str:
    """A colour bar with its range: blue, white, red from -scale to +scale for a signed map;
    white to purple from 0 to scale for a magnitude."""
    if signed:
        grad, labels = f"{_rgb(NEG)},#fff,{_rgb(POS)}", (f"\u2212{scale:.2g}", "0", f"+{scale:.2g}")
    else:
        grad, labels = f"#fff,{_rgb(MAG)}", ("0", "magnitude", f"{scale:.2g}")
    spans = "".join(f"<span>{escape(t)}</span>" for t in labels)
    return (f'<div class="uv-cbar" data-testid="colour-bar"><div class="uv-cbar-g" style="background:'
            f'linear-gradient(to right,{grad})"></div><div class="uv-cbar-l">{spans}</div></div>')


def _some(names: list[str], most: int = 5) -> str:
    """``A, B and C``, or ``A and 20 others`` for a long list."""
    if len(names) > most:
        return f"{names[0]} and {len(names) - 1} others"
    return ", ".join(names)


def legend_html(items: list[tuple[str, Explanation]], target: str = "the explained class") -> str:
    """What the colours mean, for the signed and for the magnitude maps among ``items``."""
    signed = [cap for cap, e in items if is_signed(e)]
    unsigned = [cap for cap, e in items if not is_signed(e)]
    parts = []
    if signed:
        parts.append(f"Signed maps ({escape(_some(signed))}): <b class=\"r\">red</b>: towards "
                     f"{escape(target)}, <b class=\"b\">blue</b>: against.")
    if unsigned:
        parts.append(f"Magnitude maps ({escape(_some(unsigned))}): <b class=\"m\">purple</b>: "
                     "how much the score depends on it, not in which direction.")
    parts.append("Each map has its own colour scale, drawn under it.")
    return f'<p class="uv-legend" data-testid="legend">{" ".join(parts)}</p>'


def _figure(uri: str, caption: str, *, wide: bool = False, bar: str = "") -> str:
    cls = ' class="uv-wide"' if wide else ""
    return (f'<figure><img{cls} src="{uri}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}{bar}</figcaption></figure>")


def _degenerate_html(caption: str, reason: str, kind: str) -> str:
    text = (f'<div class="uv-deg" data-testid="degenerate"><b>{escape(caption)}: degenerate map</b> '
            f"({escape(reason)})</div>")
    if kind == "image":
        return f'<figure><div class="uv-blank">degenerate</div><figcaption>{text}</figcaption></figure>'
    return f'<div class="uv-block">{text}</div>'


def _map_html(cap: str, e: Explanation, i: int, kind: str, top_k: int) -> str:
    bad = degenerate_reason(e, i)
    if bad is not None:
        return _degenerate_html(cap, bad, kind)
    sg = is_signed(e)
    if kind == "image":
        _, over, heat = image_tiles(e, i, signed=sg)
        return _figure(over, cap, bar=colour_bar(robust_scale(heat), signed=sg))
    if kind == "table":
        how = "signed" if sg else "magnitude"
        return (f'<div class="uv-block"><h4>{escape(cap)} <span class="uv-muted">({how})</span></h4>'
                f"{bars_html(feature_table(e, i, top_k=top_k), signed=sg)}</div>")
    if kind == "text":
        v = token_values(e, i)[1]
        return (f'<div class="uv-text"><b>{escape(cap)}:</b> {token_spans(e, i, signed=sg)}'
                f"{colour_bar(robust_scale(v), signed=sg)}</div>")
    v2 = element_values(e)[i]
    return _figure(sequence_tile(e, i, signed=sg), cap, wide=True,
                   bar=colour_bar(robust_scale(v2), signed=sg))


def maps_html(items: list[tuple[str, Explanation]], i: int, *, top_k: int = 8,
              with_input: bool = True) -> str:
    """Sample ``i`` as drawn by each (caption, explanation), side by side, each with its colour
    scale; a degenerate map is shown as such, with its reason."""
    if not items:
        return '<p class="uv-muted">No method produced a map for this input.</p>'
    kind = display_kind(items[0][1])
    tiles = [_map_html(cap, e, i, kind, top_k) for cap, e in items]
    if kind == "image" and with_input:
        tiles.insert(0, _figure(image_tiles(items[0][1], i)[0], "input"))
    if kind in ("image", "sequence"):
        return '<div class="uv-maps">' + "".join(tiles) + "</div>"
    return "".join(tiles)


def explanation_html(exp: Explanation, max_samples: int = 8, *, top_k: int = 10,
                     title: str | None = None) -> str:
    """A self-contained HTML fragment (its own ``<style>``) showing up to ``max_samples`` rows."""
    name = display_name(exp.method)
    n = min(len(exp), max(1, int(max_samples)))
    target = "the explained class"
    if exp.targets is not None and len(set(np.asarray(exp.targets).tolist())) == 1:
        target = class_name(int(exp.targets[0]), exp.class_names)
    parts = [f"<style>{CSS}</style><div class=\"uv\"><h3>{escape(title or name)}</h3>",
             legend_html([(name, exp)], target)]
    for i in range(n):
        head = f"Sample {i}"
        if exp.targets is not None:
            head += f" · explained: {class_name(int(exp.targets[i]), exp.class_names)}"
        if exp.outputs is not None:
            head += f" (score {float(exp.outputs[i]):.3g})"
        parts.append(f'<div class="uv-sample"><h4>{escape(head)}</h4>'
                     f"{maps_html([(name, exp)], i, top_k=top_k)}</div>")
    if len(exp) > n:
        parts.append(f'<p class="uv-muted">{len(exp) - n} more samples not shown.</p>')
    parts.append(f'<p class="uv-muted">{exp.n_evals} model evaluations · fingerprint '
                 f"{escape(str(exp.fingerprint))}</p></div>")
    return "".join(parts)
