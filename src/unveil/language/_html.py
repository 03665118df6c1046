"""Self-contained HTML for a generation explanation: a sources x generated-tokens heat map.

Rows are the source units (prompt, then generated tokens), columns the generated tokens; a cell
is red when the source raised the token's score, blue when it lowered it, scaled per column
(each generated token by its own largest magnitude). Every text is escaped; no script, no
external resource.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._result import GenerationExplanation

__all__ = ["generation_html", "shown"]

_STYLE = """
.uvg{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430}
.uvg table{border-collapse:collapse;font-size:12px}
.uvg td,.uvg th{border:1px solid #e3e8ee;padding:2px 6px;white-space:pre;text-align:left}
.uvg th{background:#eef2f6;font-weight:600}.uvg td.uvg-v{text-align:right;min-width:3.2em}
.uvg .uvg-template{color:#8a94a3}.uvg .uvg-generated{font-style:italic}
.uvg .uvg-text{white-space:pre-wrap;max-width:60em;line-height:1.9}
.uvg .uvg-gen{background:#fff4c2;border-bottom:2px solid #d9a400}
.uvg .uvg-note{font-size:12px;color:#5b6675;margin:.4em 0}
"""


def shown(text: str) -> str:
    """A token's text made visible: newlines and tabs as symbols, a lone space as ``␣``."""
    out = text.replace("\n", "\u23ce").replace("\t", "\u21e5")
    return out if out.strip() else out.replace(" ", "\u2423")


def _cell(v: float, scale: float) -> str:
    if not np.isfinite(v):
        return "<td class='uvg-v'></td>"
    a = 0.0 if scale <= 0 else min(1.0, abs(v) / scale)
    rgb = "214,48,39" if v >= 0 else "42,107,191"
    return (f"<td class='uvg-v' style='background:rgba({rgb},{a:.2f})' title='{v:.4g}'>"
            f"{v:.2g}</td>")


def _heatmap(res: GenerationExplanation) -> str:
    vals = res.values
    scales = [float(np.nanmax(np.abs(c))) if np.isfinite(c).any() else 0.0 for c in vals]
    head = "".join(f"<th class='uvg-generated'>{escape(shown(t))}</th>" for t in res.generated)
    rows = []
    for u in range(len(res.units)):
        col = vals[:, u]
        if not np.isfinite(col).any():
            continue  # the last generated token is no source of anything
        kind = res.unit_kind(u)
        cells = "".join(_cell(float(col[g]), scales[g]) for g in range(len(res.generated)))
        rows.append(f"<tr><th class='uvg-{kind}'>{escape(shown(res.unit_text(u)))}</th>"
                    f"{cells}</tr>")
    return (f"<table><tr><th>source \u2193 / generated \u2192</th>{head}</tr>"
            f"{''.join(rows)}</table>")


def _steps(res: GenerationExplanation) -> str:
    has_foil = "foil_prob" in res.scores
    head = ("<tr><th>#</th><th>token</th><th>p</th><th>entropy</th>"
            + ("<th>foil</th><th>p(foil)</th>" if has_foil else "")
            + "<th>top sources</th><th>other likely tokens</th></tr>")
    rows = []
    for g, tok in enumerate(res.generated):
        src = ", ".join(f"{escape(shown(s.text))} ({s.value:+.3g})"
                        for s in res.top_sources(g, 3))
        others = [(t, p) for t, p in (res.alternatives[g] if g < len(res.alternatives) else [])
                  if t != tok][:3]
        alt = ", ".join(f"{escape(shown(t))} {p:.2f}" for t, p in others)
        foil = (f"<td>{escape(shown(res.foils[g]))}</td><td>{res.scores['foil_prob'][g]:.3f}</td>"
                if has_foil and res.foils else "")
        rows.append(f"<tr><td>{g}</td><td>{escape(shown(tok))}</td>"
                    f"<td>{res.scores['prob'][g]:.3f}</td><td>{res.scores['entropy'][g]:.2f}</td>"
                    f"{foil}<td>{src}</td><td>{alt}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def generation_html(res: GenerationExplanation, *, full: bool, title: str) -> str:
    """The heat map, the text and a per-token table; a whole page when ``full``."""
    prompt = "".join(escape(t) for t, k in zip(res.tokens, res.kinds)
                     if k != "generated")
    gen = escape(res.text)
    what = ("log p(token) \u2212 log p(foil)" if res.objective == "log_prob_diff"
            else "log p(token)")
    note = (f"{escape(res.method)} on {what}; red raises the score, blue lowers it; colour "
            "scaled per generated token. Empty cells: the source comes after the token.")
    if res.delta is not None and np.isfinite(res.delta).all():
        note += (f" Completeness gap (sum of attributions vs. score change from the baseline): "
                 f"at most {float(np.max(np.abs(res.delta))):.2g}.")
    body = (f"<div class='uvg'><div class='uvg-text'>{prompt}<span class='uvg-gen'>{gen}</span>"
            f"</div><p class='uvg-note'>{note}</p>{_heatmap(res)}<h4>Per token</h4>"
            f"{_steps(res)}</div>")
    if not full:
        return f"<style>{_STYLE}</style>{body}"
    t = escape(title)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{t}</title>"
            f"<style>body{{margin:1.5em}}{_STYLE}</style></head><body><h3>{t}</h3>{body}"
            "</body></html>\n")
