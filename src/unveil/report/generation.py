"""A report page for a generation explanation: what the model wrote, which sources made each
token, how sure it was, and the sources x generated heat map (one self-contained HTML file)."""

from __future__ import annotations

from html import escape

import numpy as np

from ..language import GenerationExplanation
from .html import document
from .narrative import display_name

__all__ = ["generation_page", "generation_summary"]


def _shown(text: str) -> str:
    return repr(text.replace("\n", "\u23ce"))


def generation_summary(res: GenerationExplanation, *, top: int = 2) -> list[str]:
    """Plain-language sentences: one per generated token (its probability, its strongest
    sources), then a caution when a path method's completeness gap is large."""
    what = ("the log-probability margin over " + ", ".join(sorted({_shown(f) for f in res.foils}))
            if res.objective == "log_prob_diff" and res.foils else "its log-probability")
    lines = [f"The model wrote {_shown(res.text)} after a {res.n_prompt}-token prompt; each "
             f"token is explained by {display_name(res.method)} on {what}."]
    for g, tok in enumerate(res.generated):
        srcs = [s for s in res.top_sources(g, top, by="positive") if s.value > 0]
        why = (" and ".join(f"{_shown(s.text)} ({s.value:+.2g})" for s in srcs)
               if srcs else "no source that raised it")
        sure = res.scores["prob"][g]
        lines.append(f"{_shown(tok)} (p = {sure:.2f}) rests most on {why}.")
    if res.delta is not None and res.outputs is not None and res.baseline_outputs is not None:
        gap = np.abs(res.delta) / np.maximum(np.abs(res.outputs - res.baseline_outputs), 1e-12)
        if np.nanmax(gap) > 0.1:
            lines.append(f"Caution: the attributions of some tokens miss f(x) - f(baseline) by "
                         f"up to {np.nanmax(gap):.0%}; raise n_steps (or use n_steps='auto').")
    return lines


def generation_page(res: GenerationExplanation, *, title: str = "unveil: generation") -> str:
    """The whole page: summary sentences, then the heat map and the per-token table."""
    summary = "".join(f"<li>{escape(s)}</li>" for s in generation_summary(res))
    body = (f"<h1>{escape(title)}</h1><div class='uv-summary'><ul>{summary}</ul></div>"
            f"<h2>Where each generated token came from</h2>{res.to_html(full=False)}")
    return document(body, title)
