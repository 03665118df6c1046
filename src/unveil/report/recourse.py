"""Recourse for people who are not engineers: what would have to change, in words and a table.

:func:`recourse_section` is an HTML fragment (its own ``<style>``, no script, no external
resource) for notebooks, reports and the audit page: per row the decision, the sentence
("Had income been 4,200 instead of 3,100 ..."), each counterfactual's changed columns (from,
to), the model's new score, and the CARLA figures over all rows. :func:`recourse_page` wraps it
into one page. :func:`recourse_by_group` compares the cost of recourse between groups of a
sensitive attribute for the audit page (Sharma et al., 2020, "CERTIFAI": the burden).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from .html import CSS, document, fmt

if TYPE_CHECKING:
    from ..audit.bias import BiasAudit
    from ..counterfactual.anchors import Anchor
    from ..counterfactual.result import Counterfactuals

__all__ = ["audit_recourse_html", "recourse_by_group", "recourse_page", "recourse_section",
           "report_recourse_html"]

_FIGURES = (
    ("validity", "rows with a valid counterfactual", "share of rows for which a change within the constraints "
     "was found that gives the other decision"),
    ("l0", "columns changed", "mean number of columns a counterfactual changes"),
    ("l1", "L1 distance", "mean sum of the changes, each in units of its column's spread"),
    ("l2", "L2 distance", "mean straight-line size of the change, in the same units"),
    ("violations", "constraint violations", "constraints broken by the counterfactuals returned (always 0)"),
    ("plausibility", "distance to the data", "mean distance to the 5 nearest real rows: small means a realistic case"),
    ("ynn", "yNN", "share of those nearest real rows that the model gives the same new decision"),
    ("seconds_per_counterfactual", "seconds per counterfactual", "search time divided by counterfactuals found"),
)


def _figures(cf: Counterfactuals) -> str:
    m = cf.metrics
    rows = "".join(
        f'<tr><td title="{escape(why)}">{escape(label)}</td><td>'
        f"{(f'{100 * m[key]:.1f}%' if key == 'validity' else fmt(m[key]))}</td></tr>"
        for key, label, why in _FIGURES)
    return f'<table class="uv-grid" data-testid="recourse-metrics"><tr><th>figure</th><th>value</th></tr>{rows}</table>'


def _changes(cf: Counterfactuals, i: int, most: int) -> str:
    ks = np.flatnonzero(cf.valid[i])[:most]
    if ks.size == 0:
        return ""
    names = cf.feature_names
    cols = [j for j in range(len(names)) if any(cf.rows[i, k, j] != cf.x[i, j] for k in ks)]
    head = "".join(f"<th>option {n + 1}</th>" for n in range(ks.size))
    body = "".join(
        f"<tr><td>{escape(names[j])}</td><td>{escape(cf.cell(j, float(cf.x[i, j])))}</td>"
        + "".join(f"<td>{'' if cf.rows[i, k, j] == cf.x[i, j] else escape(cf.cell(j, float(cf.rows[i, k, j])))}</td>"
                  for k in ks)
        + "</tr>" for j in cols)
    return (f'<table class="uv-grid"><tr><th>column</th><th>now</th>{head}</tr>{body}'
            f'<tr><td class="uv-muted">score of the new decision</td><td></td>'
            + "".join(f"<td>{fmt(float(np.max(cf.scores[i, k])))}</td>" for k in ks) + "</tr></table>")


def recourse_section(cf: Counterfactuals, *, max_rows: int = 10, max_options: int = 3,
                     rows: list[int] | None = None, style: bool = True, heading: bool = True,
                     anchors: Sequence[Anchor | None] = ()) -> str:
    """An HTML fragment: the figures, then per row its sentence, the options found and, when
    given (``anchors[i]`` for row ``i``), a rule that keeps its decision. ``style``: include
    the CSS (a notebook cell needs it; a report page has it)."""
    pick = list(range(min(len(cf), max_rows))) if rows is None else rows[:max_rows]
    found = int(cf.found.sum())
    parts = [f"<style>{CSS}</style>" if style else "", "<div class=\"uv\" data-testid=\"recourse\">",
             "<h3>What would change the decision</h3>" if heading else "",
             f'<p class="uv-muted">{found} of {len(cf)} rows have a change within the constraints that gives '
             f"another decision ({escape(cf.method)} search; distances in units of each column's spread).</p>",
             _figures(cf)]
    for i in pick:
        cls = "uv-ok" if cf.found[i] else "uv-caution"
        a = anchors[i] if i < len(anchors) else None
        parts.append(f'<div class="uv-sample"><h4>row {i}</h4>'
                     f'<p class="uv-narrative {cls}" data-testid="recourse-sentence">{escape(cf.recourse(i))}</p>'
                     f"{_changes(cf, i, max_options)}{'' if a is None else _anchor_html(a)}</div>")
    if len(pick) < len(cf):
        parts.append(f'<p class="uv-muted">{len(cf) - len(pick)} more rows not shown.</p>')
    parts.append("</div>")
    return "".join(parts)


def _anchor_html(a: Anchor) -> str:
    """A rule that keeps the decision, with how its precision and coverage were measured."""
    return (f'<p data-testid="anchor-sentence"><b>What keeps it:</b> {escape(a.sentence)}</p>'
            f'<p class="uv-muted">Anchor (Ribeiro et al., 2018): precision {a.precision:.1%} on {a.n_samples} '
            f"rows drawn from the data with these conditions held (asked: {a.threshold:.0%}); coverage "
            f"{a.coverage:.1%}, the share of the data's rows that meet them.</p>")


def report_recourse_html(cf: Counterfactuals | None, anchors: Sequence[Anchor | None] = (),
                         note: str | None = None, *, max_rows: int = 8) -> str:
    """The report's "What would change the decision" part of a table model's section (its
    heading is the page's): the recourse of the explained rows, or why there is none."""
    out = ['<h3 data-testid="report-recourse">What would change the decision</h3>']
    if cf is not None:
        out.append(recourse_section(cf, max_rows=max_rows, style=False, heading=False, anchors=anchors))
    if note:
        out.append(f'<p class="uv-muted">{escape(note)}</p>')
    return "".join(out)


def recourse_page(cf: Counterfactuals, *, title: str | None = None) -> str:
    """:func:`recourse_section` as one self-contained page."""
    title = title or "What would change the decision"
    return document(recourse_section(cf, max_rows=50), title)


def recourse_by_group(cf: Counterfactuals, groups: np.ndarray, names: dict[str, str] | None = None) -> str:
    """An HTML table: per group, the rows needing recourse, the share that has one, and the mean
    L1 cost of the closest — a group that must change more for the same decision bears a burden."""
    out = ['<table class="uv-grid" data-testid="recourse-by-group"><tr><th>group</th><th>rows</th>'
           "<th>with a counterfactual</th><th>mean cost (L1)</th><th>mean columns changed</th></tr>"]
    for g in np.unique(groups):
        sel = groups == g
        found = cf.found[sel]
        cost = cf.l1[sel, 0][found]
        l0 = cf.l0[sel, 0][found]
        label = (names or {}).get(str(g), str(g))
        out.append(f"<tr><td>{escape(label)}</td><td>{int(sel.sum())}</td><td>{100 * found.mean():.0f}%</td>"
                   f"<td>{fmt(float(cost.mean()) if cost.size else None)}</td>"
                   f"<td>{fmt(float(l0.mean()) if l0.size else None)}</td></tr>")
    return "".join(out) + "</table>"


def audit_recourse_html(a: BiasAudit) -> str:
    """The audit page's recourse part: per group, how many refused people have a way to the
    favourable decision without changing the audited attribute, and what it costs them."""
    r = a.recourse or {}
    rows = []
    for g, m in r.get("by_group", {}).items():
        rows.append(f"<tr><td>{escape(a.group_name(g))}</td><td>{int(m['rows'])}</td>"
                    f"<td>{100 * m['with_recourse']:.0f}%</td><td>{fmt(m['mean_cost'])}</td>"
                    f"<td>{fmt(m['mean_changed'])}</td></tr>")
    costs = {g: m["mean_cost"] for g, m in r.get("by_group", {}).items() if np.isfinite(m["mean_cost"])}
    lead = ""
    if len(costs) >= 2:
        lo, hi = min(costs, key=costs.__getitem__), max(costs, key=costs.__getitem__)
        lead = (f'<p class="uv-narrative">A person refused in the group {escape(a.group_name(hi))} must change '
                f"{costs[hi] / max(costs[lo], 1e-12):.1f} times as much, on average, as one in the group "
                f"{escape(a.group_name(lo))} to be given \u201c{escape(a.decision)}\u201d (without changing "
                f"{escape(a.sensitive)}).</p>")
    examples = "".join(f'<li data-testid="recourse-sentence">{escape(t)}</li>' for t in r.get("examples", []))
    return (f'<h2 data-testid="audit-recourse">What a refused person would have to change</h2>'
            f'<p class="uv-muted">{int(r.get("n_rows", 0))} refused rows; the nearest change within the data\'s '
            f"units that obtains the decision, with {escape(a.sensitive)} held fixed ({escape(str(r.get('method')))} "
            "search; cost = sum of the changes, each in units of its column's spread).</p>"
            f"{lead}"
            '<table class="uv-grid"><tr><th>group</th><th>refused rows</th><th>with a way to the decision</th>'
            f"<th>mean cost</th><th>mean columns changed</th></tr>{''.join(rows)}</table>"
            f"<ul>{examples}</ul>")
