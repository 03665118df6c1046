"""Plain-language definitions of the technical terms a page shows.

A page marks each term it prints with :func:`term` (a ``title=`` tooltip and a ``data-term``
key); :func:`glossary_html` then lists, in a folded ``<details>``, only the terms the page
actually marked.
"""

from __future__ import annotations

import re
from html import escape

__all__ = ["TERMS", "glossary_html", "mark_terms", "term"]

#: key -> (the term as printed, its definition in plain words)
TERMS: dict[str, tuple[str, str]] = {
    "deletion_auc": (
        "deletion AUC",
        "Remove the input's features in the order the map ranks them (most important first) and "
        "record the model's score after each step; the area under that curve. Lower is better: a "
        "faithful map makes the score fall fast."),
    "insertion_auc": (
        "insertion AUC",
        "Start from a blank input and put the features back in the map's order; the area under "
        "the score curve. Higher is better: a faithful map makes the score rise fast."),
    "faithfulness_margin": (
        "faithfulness margin",
        "Insertion AUC minus deletion AUC in the map's order, minus the same in a random order. "
        "Above zero: the map ranks the features the model uses better than chance."),
    "sanity_check": (
        "sanity check",
        "Randomise the model's weights (from the top layers down) and explain again. A map that "
        "hardly changes shows the input, not what the model learned, and fails."),
    "agreement": (
        "agreement",
        "Spearman rank correlation of |attribution| between two methods' maps of the same input "
        "(1 = the same ranking, 0 = unrelated, negative = opposite)."),
    "completeness_gap": (
        "completeness gap",
        "For methods whose attributions should add up to the change in score between the input "
        "and the baseline (Integrated Gradients, DeepLIFT, LRP): how far the sum misses it."),
    "degenerate": (
        "degenerate map",
        "A map that is the same value everywhere (often all zero) or not finite: it ranks "
        "nothing and explains nothing, whatever its colours look like."),
    "attribution_share": (
        "attribution share",
        "A column's part of the total |attribution| the model's decisions receive, averaged over "
        "the rows explained: how much the decisions rest on that column."),
    "flip_rate": (
        "counterfactual flip rate",
        "Take each person, change only the audited attribute to another group's value, and ask the "
        "model again: the share of those cases whose decision changes."),
    "demographic_parity_difference": (
        "demographic parity difference",
        "The largest gap between two groups in how often they receive the decision (0 = every "
        "group receives it equally often)."),
    "equalized_odds_difference": (
        "equalized odds difference",
        "The largest gap between groups in the true-positive or the false-positive rate: whether "
        "the model errs more often for some groups among people with the same true outcome."),
    "proxy_auc": (
        "proxy AUC",
        "How well one column alone predicts the audited attribute (0.5 = not at all, 1 = "
        "perfectly): a column with a high AUC can stand in for the attribute."),
}


def term(key: str, label: str | None = None) -> str:
    """HTML for a term: its words with a tooltip, marked so the glossary lists it."""
    words, definition = TERMS[key]
    return (f'<span class="uv-term" data-term="{key}" title="{escape(definition)}">'
            f"{escape(label or words)}</span>")


#: Phrases of the narrative that name a term of :data:`TERMS`.
_PHRASES = {"sanity check": "sanity_check", "rank correlation": "agreement",
            "miss the change in score": "completeness_gap", "deletion AUC": "deletion_auc",
            "faithfulness margin": "faithfulness_margin"}


def mark_terms(text: str) -> str:
    """Escape ``text`` and give the first mention of each term a tooltip (:func:`term`)."""
    out = escape(text)
    for phrase, key in _PHRASES.items():
        out = out.replace(escape(phrase), term(key, phrase), 1)
    return out


def glossary_html(body: str) -> str:
    """A folded glossary of the terms marked in ``body`` (empty when none is)."""
    keys = sorted(set(re.findall(r'data-term="([a-z_]+)"', body)) & set(TERMS),
                  key=lambda k: TERMS[k][0])
    if not keys:
        return ""
    items = "".join(f"<dt>{escape(TERMS[k][0])}</dt><dd>{escape(TERMS[k][1])}</dd>" for k in keys)
    return (f'<details class="uv-glossary" data-testid="glossary"><summary>Glossary: '
            f"{len(keys)} terms used on this page</summary><dl>{items}</dl></details>")
