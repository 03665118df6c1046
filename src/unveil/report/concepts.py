"""Report sections for concept results: a TCAV result as an HTML fragment or a whole page.

The chart and table come from the result itself (:meth:`unveil.concepts.TCAVResult.to_html`),
so notebook, report and dashboard show the same figure; this adds the report's style and a
sentence per concept in plain words.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from .html import CSS, document

if TYPE_CHECKING:
    from ..concepts import TCAVResult

__all__ = ["tcav_page", "tcav_section", "tcav_sentences"]


def tcav_sentences(result: TCAVResult) -> list[str]:
    """One sentence per concept: its score, what it means and whether it beats chance."""
    out = []
    rnd = float(result.random_scores.mean())
    for i, c in enumerate(result.concepts):
        s = float(result.scores[i])
        share = f"{100 * s:.0f}%"
        if result.significant[i]:
            way = "raises" if s > rnd else "lowers"
            tail = (f"significantly different from random concepts ({rnd:.2f}; corrected p = "
                    f"{result.p_corrected[i]:.2g}): the concept {way} the class score.")
        else:
            tail = (f"not distinguishable from random concepts ({rnd:.2f}; corrected p = "
                    f"{result.p_corrected[i]:.2g}).")
        out.append(f"Moving toward \u201c{c}\u201d raises the score of class "
                   f"{result.target_name} for {share} of its inputs \u2014 {tail}")
    return out


def tcav_section(result: TCAVResult) -> str:
    """An HTML fragment: the sentences, the bar chart and table of :meth:`TCAVResult.to_html`."""
    items = "".join(f'<li class="uv-narrative">{escape(s)}</li>' for s in tcav_sentences(result))
    return (f'<style>{CSS}</style><div class="uv" data-testid="tcav">'
            f"<h3>Concepts (TCAV) at layer {escape(result.layer)}</h3><ul>{items}</ul>"
            f"{result.to_html()}</div>")


def tcav_page(result: TCAVResult, *, title: str | None = None) -> str:
    """:func:`tcav_section` as one self-contained page."""
    return document(tcav_section(result), title or f"TCAV: class {result.target_name}")
