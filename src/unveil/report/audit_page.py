"""A bias audit as one self-contained HTML page for reviewers who are not ML engineers.

The page opens with the verdict and plain sentences that say what each flag means, then shows
every figure next to its threshold, the outcomes by group, each column's share of the model's
attribution and the columns that stand in for the attribute. Styles are inline (those of the
report), there is no script and no external resource.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from .glossary import glossary_html, term
from .html import bars_html, document
from .render import Row

if TYPE_CHECKING:
    from ..audit.bias import BiasAudit

__all__ = ["audit_html", "audit_sentences"]

_VERDICTS = {
    "fail": ("uv-bad", "The model uses the sensitive attribute itself."),
    "review": ("uv-caution", "The model does not use the attribute directly, but something needs a "
                             "closer look."),
    "pass": ("uv-ok", "No figure reached its threshold."),
}
_METRIC_NAMES = {"count": "rows", "selection_rate": "favourable decisions", "base_rate": "base rate (true outcome)",
                 "true_positive_rate": "true positive rate", "false_positive_rate": "false positive rate",
                 "accuracy": "accuracy"}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def audit_sentences(a: BiasAudit) -> list[str]:
    """Plain-language sentences, one per kind of evidence that raised a flag (or a reassurance)."""
    out: list[str] = []
    kinds = {f.kind for f in a.flags}
    th = a.thresholds
    if a.flip_rate is not None and a.flip_rate >= th.flip_rate:
        out.append(f"Changing only {a.sensitive!r} to another group's value, and nothing else about a "
                   f"person, changes the decision in {_pct(a.flip_rate)} of cases.")
    if a.sensitive_share is not None and a.sensitive_share >= th.attribution_share:
        out.append(f"{a.sensitive!r} carries {_pct(a.sensitive_share)} of the weight of the model's "
                   "decisions.")
    proxies = [p for p in a.proxies if p.is_proxy and (p.attribution_share or 0.0) >= th.attribution_share]
    if proxies:
        names = ", ".join(repr(p.feature) for p in proxies)
        out.append(f"The model leans on {names}, which reveal{'s' if len(proxies) == 1 else ''} "
                   f"{a.sensitive!r} (together {_pct(a.proxy_share)} of the weight): it can treat "
                   "groups differently without looking at the attribute.")
    if "disparity" in kinds:
        rates = {g: m["selection_rate"] for g, m in a.group_metrics.items()}
        lo, hi = min(rates, key=rates.__getitem__), max(rates, key=rates.__getitem__)
        out.append(f"The group {a.group_name(hi)} receives the decision \u201c{a.decision}\u201d in "
                   f"{_pct(rates[hi])} of cases; the group {a.group_name(lo)} in {_pct(rates[lo])}. Outcomes can differ for reasons that are legitimate; a "
                   "person who knows the domain should judge whether these are.")
    if not out:
        out.append(f"The model's decisions do not depend on {a.sensitive!r} or on the columns that "
                   "reveal it, and outcomes are similar across groups, by every measure below.")
    return out


def _checks_table(a: BiasAudit) -> str:
    th = a.thresholds
    sens = escape(a.sensitive)
    share, flip = term("attribution_share"), term("flip_rate")
    rows: list[tuple[str, str, float | None, float]] = [
        ("direct use", f"{share} of {sens}", a.sensitive_share, th.attribution_share),
        ("direct use", f"{flip}: decisions that change when only {sens} changes", a.flip_rate,
         th.flip_rate),
    ]
    for p in a.proxies:
        if p.is_proxy:
            rows.append(("proxy", f"{share} of {escape(p.feature)} (predicts {sens} with "
                                  f"{term('proxy_auc')} {p.auc:.2f})", p.attribution_share,
                         th.attribution_share))
    extra = (None if a.flip_rate is None or a.flip_rate_with_proxies is None
             else a.flip_rate_with_proxies - a.flip_rate)
    rows.append(("proxy", f"extra {flip} when the proxies move too", extra, th.flip_rate))
    rows.append(("outcomes", term("demographic_parity_difference"), a.demographic_parity_difference,
                 th.parity_difference))
    rows.append(("outcomes", term("equalized_odds_difference"), a.equalized_odds_difference,
                 th.parity_difference))
    out = ['<table class="uv-grid"><tr><th>evidence</th><th>figure</th><th>value</th><th>threshold</th>'
           "<th>flag</th></tr>"]
    for kind, what, value, limit in rows:
        flagged = value is not None and value >= limit
        mark = ('<span class="uv-bad">flag</span>' if flagged else
                ('<span class="uv-muted">n/a</span>' if value is None else '<span class="uv-ok">ok</span>'))
        shown = "n/a" if value is None else f"{value:.3f}"
        out.append(f"<tr><td>{escape(kind)}</td><td>{what}</td><td>{shown}</td>"
                   f"<td>{limit:g}</td><td>{mark}</td></tr>")
    return "".join(out) + "</table>"


def _groups_table(a: BiasAudit) -> str:
    keys = list(next(iter(a.group_metrics.values())).keys())
    head = "".join(f"<th>{escape(_METRIC_NAMES.get(k, k))}</th>" for k in keys)
    head = head.replace(">favourable decisions<", f">decision \u201c{escape(a.decision)}\u201d<")
    out = [f'<table class="uv-grid"><tr><th>group of {escape(a.sensitive)}</th>{head}</tr>']
    for g, m in a.group_metrics.items():
        cells = "".join(f"<td>{int(m[k]) if k == 'count' else f'{m[k]:.3f}'}</td>" for k in keys)
        out.append(f"<tr><td>{escape(a.group_name(g))}</td>{cells}</tr>")
    return "".join(out) + "</table>"


def audit_html(a: BiasAudit, *, title: str | None = None) -> str:
    """The complete page."""
    cls, line = _VERDICTS.get(a.verdict, ("uv-muted", ""))
    title = title or f"Bias audit of {a.sensitive}"
    shares = sorted(a.attribution_shares.items(), key=lambda kv: -kv[1])
    proxy_rows = "".join(
        f"<tr><td>{escape(p.feature)}</td><td>{p.auc:.2f}</td><td>{p.mutual_information:.3f}</td>"
        f"<td>{'yes' if p.is_proxy else 'no'}</td><td>{_pct(p.attribution_share)}</td></tr>"
        for p in sorted(a.proxies, key=lambda p: -p.auc))
    decision = a.decision + ("" if a.class_names else " (no class names given)")
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="uv-muted" data-testid="audit-facts">{a.n_rows} rows, {len(a.groups)} groups of '
        f"{escape(a.sensitive)} ({escape('; '.join(a.group_name(g) for g in a.groups))}); the "
        f"favourable decision audited: <b>{escape(decision)}</b>.</p>",
        f'<h2 data-testid="verdict">Verdict: <span class="{cls}">{escape(a.verdict.upper())}</span></h2>',
        f'<div data-testid="reasons"><p class="uv-narrative">{escape(line)}</p>',
        "".join(f'<p class="uv-narrative">{escape(s)}</p>' for s in audit_sentences(a)), "</div>",
        "<h2>Every check and its threshold</h2>", _checks_table(a),
        '<p class="uv-muted">A flag is raised when a value reaches its threshold. The verdict is FAIL '
        "when the attribute itself is used, REVIEW when proxies are used or outcomes differ, PASS "
        "otherwise.</p>",
        "<h2>Outcomes by group</h2>", _groups_table(a),
        f"<h2>What the decisions rest on: each column's {term('attribution_share')} "
        f"({escape(a.attribution_method)})</h2>",
        bars_html([Row(n, float("nan"), v) for n, v in shares], show_value=False, signed=False),
        "<h2>Columns that reveal the attribute</h2>",
        f'<table class="uv-grid"><tr><th>column</th><th>{term("proxy_auc", "AUC predicting it")}</th><th>mutual information'
        f"</th><th>proxy?</th><th>share of attribution</th></tr>{proxy_rows}</table>"
        if proxy_rows else '<p class="uv-muted">No other column was tested.</p>',
        f'<p class="uv-muted">All columns together predict {escape(a.sensitive)} with AUC '
        f"{a.reconstruction_auc:.2f}.</p>",
    ]
    if a.recourse:
        from .recourse import audit_recourse_html

        body.append(audit_recourse_html(a))
    body.append(glossary_html("".join(body)))
    return document("".join(body), title)
