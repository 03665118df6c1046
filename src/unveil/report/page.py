"""The HTML page of a report: for each input, the decision, its strongest reasons in the data's
units and a one-line trust verdict first; then the maps of every method, the trust card, the
methods that ran (the skipped ones folded into one line), the global view, and the
reproducibility facts folded away; a glossary of the terms the page uses at the end."""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.explanation import jsonable
from .facts import (
    lead_margin,
    lead_method,
    method_facts,
    outside_warning,
    prediction,
    reasons,
    sample_narrative,
    section_trust_summary,
    trust_line,
    usable_runs,
)
from .glossary import glossary_html, mark_terms, term
from .html import bars_html, document, fmt, legend_html, maps_html
from .narrative import display_name, pct
from .render import Row

if TYPE_CHECKING:
    from ..core.explanation import Explanation
    from ._builder import MethodRun, Report, Section

__all__ = ["counts_line", "render_report", "run_status"]


def run_status(r: MethodRun) -> tuple[str, str]:
    """A run's status as shown (``"degenerate"`` rather than ``"ok"`` for a blank map) and its
    note."""
    d: Any = r.explanation.quality.get("degenerate") if r.explanation is not None else None
    if isinstance(d, dict) and d.get("n"):
        return r.shown_status, f"{d.get('kind', 'constant')} map: {d.get('reason', '')}"
    return r.status, r.error or r.skipped or ""


def counts_line(section: Section) -> str:
    """Exact counts: how many methods ran, were skipped, failed, gave degenerate maps."""
    runs = section.runs
    ran = sum(r.explanation is not None for r in runs)
    skipped = sum(r.status == "skipped" for r in runs)
    failed = sum(r.status == "error" for r in runs)
    deg = sum(run_status(r)[0].startswith("degenerate") for r in runs)
    line = f"{ran} method{'s' if ran != 1 else ''} ran"
    if skipped:
        line += f", {skipped} skipped"
    if failed:
        line += f", {failed} failed"
    if skipped or failed:
        line += f" (of {len(runs)} asked for)"
    if deg:
        line += (f"; {deg} of those that ran gave a {term('degenerate')} for at least one input, "
                 "shown as such and left out of the reasons")
    return line


def _runs_table(section: Section) -> str:
    rows = ["<table class=\"uv-grid\"><tr><th>method</th><th>status</th><th>time (s)</th>"
            "<th>model evaluations</th><th>note</th></tr>"]
    skipped = [r for r in section.runs if r.status == "skipped"]
    for r in section.runs:
        if r.status == "skipped":
            continue
        status, note = run_status(r)
        cls = {"ok": "uv-ok", "error": "uv-bad"}.get(status, "uv-bad")
        rows.append(f"<tr><td>{escape(display_name(r.method))}</td><td class=\"{cls}\">"
                    f"{escape(status)}</td><td>{r.seconds:.2f}</td><td>{r.n_evals}</td>"
                    f"<td>{escape(note)}</td></tr>")
    out = "".join(rows) + "</table>" if len(rows) > 1 else ""
    if skipped:
        items = "".join(f"<li>{escape(display_name(r.method))}: {escape(r.skipped or '')}</li>"
                        for r in skipped)
        out += (f'<details data-testid="skipped"><summary>{len(skipped)} method'
                f"{'s' if len(skipped) != 1 else ''} skipped (do not apply to this model)"
                f"</summary><ul>{items}</ul></details>")
    return out


def _decision_html(section: Section, i: int, *, note_unnamed: bool) -> str:
    p = prediction(section, i)
    label = p.label + (" (no class names given)" if note_unnamed and section.class_names is None
                       and p.prob is not None else "")
    if p.prob is not None:
        line = f"Decision: <b>{escape(label)}</b>, confidence {pct(p.prob)}"
        if p.runner_up is not None and p.runner_prob is not None:
            line += f" (next: {escape(p.runner_up)}, {pct(p.runner_prob)})"
    else:
        line = f"Model output: <b>{escape(p.label)}</b>"
    if p.true_label is not None:
        cls = "uv-ok" if p.true_label == p.label else "uv-bad"
        line += f' · true: <span class="{cls}">{escape(p.true_label)}</span>'
    if p.target != p.label:
        line += f" · the maps explain {escape(p.target)}"
    return f'<p class="uv-decision" data-testid="decision">{line}</p>'


_BASELINES = {"zeros": "an all-zero input", "mean": "the data's mean", "blur": "a blurred input",
              "uniform": "uniform noise"}


def _compared_with(exp: Explanation) -> str:
    """``; each compared with an all-zero input`` for methods that measure against a baseline."""
    b = exp.params.get("baseline")
    if exp.params.get("value_function") == "background" or exp.method in ("gradient_shap", "deeplift_shap"):
        return "; each compared with the background rows"
    if isinstance(b, str):
        return f"; each compared with {_BASELINES.get(b, f'a {b} baseline')}"
    return ""


def _reasons_html(section: Section, i: int, ok: list[MethodRun]) -> str:
    lead = lead_method(section, i, ok)
    if lead.method is None:
        return f'<p class="uv-caution" data-testid="reasons">No reasons shown: {escape(lead.why)}.</p>'
    exp = next(r.explanation for r in ok if r.method == lead.method and r.explanation is not None)
    target = prediction(section, i).target
    name = escape(display_name(lead.method))
    how = (f"the method measured most faithful here, {term('faithfulness_margin', 'ranked by deletion/insertion against a random order')}"
           if lead.measured else "faithfulness not measured")
    head = f"Strongest reasons, according to {name} ({how}{escape(_compared_with(exp))}):"
    found = reasons(section, exp, i)
    if found:
        items = "".join(f"<li>{escape(r.text(target))}</li>" for r in found)
        return (f'<div data-testid="reasons"><p class="uv-muted" style="margin:.2em 0">{head}</p>'
                f'<ol class="uv-reasons">{items}</ol></div>')
    f = method_facts(exp, i, lead.method)
    where = (f"The evidence for {escape(target)} lies mainly in {escape(f.region)}" if f.region
             else "This method's map does not reduce to named features")
    if f.concentration is not None:
        where += f"; the top 10% of its pixels hold {100 * f.concentration:.0f}% of it"
    return f'<div data-testid="reasons"><p style="margin:.2em 0">{head} {where}.</p></div>'


def _sample_html(section: Section, i: int, ok: list[MethodRun]) -> str:
    ood = outside_warning(ok, i)
    warn = f'<p class="uv-warn" data-testid="outside">Warning: {escape(ood)}</p>' if ood else ""
    lead = lead_method(section, i, ok)
    summary = (f'<div class="uv-summary">{_decision_html(section, i, note_unnamed=i == 0)}{warn}'
               f"{_reasons_html(section, i, ok)}"
               f'<p class="uv-verdict" data-testid="verdict">{escape(trust_line(section, i, lead))}</p>'
               "</div>")
    items = [(display_name(r.method), r.explanation) for r in ok if r.explanation is not None]
    first = [it for r, it in zip(ok, items) if r.method == lead.method]
    others = [it for r, it in zip(ok, items) if r.method != lead.method]
    target = prediction(section, i).target
    nar = sample_narrative(section, i, ok)
    cautions = "".join(f'<p class="uv-caution">Caution: {mark_terms(c)}</p>' for c in nar.cautions)
    detail = (maps_html(first + others, i) if len(items) <= 4 else
              maps_html(first or others[:1], i) + f"<details><summary>Maps of the other "
              f"{len(others) - (0 if first else 1)} methods</summary>"
              f"{maps_html(others if first else others[1:], i)}</details>")
    legend = legend_html(first + others, target)
    n_usable = len(usable_runs(ok, i))
    return (f'<article class="uv-sample" data-testid="input"><h4>Input {i}</h4>{summary}'
            f"{legend}{detail}"
            f'<p class="uv-narrative">{mark_terms(" ".join(nar.sentences))}</p>{cautions}'
            + ('' if n_usable == len(items) else
               f'<p class="uv-muted">{len(items) - n_usable} degenerate map(s) left out of the '
               "description.</p>") + "</article>")


def _answer(v: dict[str, Any] | None, detail: str) -> str:
    """``yes``/``no``/``unknown`` with ``detail`` (HTML) beside it."""
    if v is None:
        return "–"
    answer = v.get("answer")
    word = ("unknown" if answer is None else
            '<span class="uv-ok">yes</span>' if answer else '<span class="uv-bad">no</span>')
    if v.get("answer") is None and "reason" in v.get("figures", {}):
        detail = escape(str(v["figures"]["reason"]))
    return f"{word} <span class=\"uv-muted\">{detail}</span>" if detail else word


def _faithful_detail(v: dict[str, Any] | None) -> str:
    f = (v or {}).get("figures", {})
    parts = []
    if "faithfulness_margin" in f:
        parts.append(f"{term('faithfulness_margin', 'margin')} {float(f['faithfulness_margin']):+.3g}")
    for name in ("deletion", "insertion"):
        if f"{name}_auc" in f and f"random_{name}_auc" in f:
            parts.append(f"{term(name + '_auc')} {fmt(f[name + '_auc'])} vs "
                         f"{fmt(f['random_' + name + '_auc'])} random")
    return "; ".join(parts)


def _sanity_detail(v: dict[str, Any] | None) -> str:
    f = (v or {}).get("figures", {})
    sim = [(k, x) for k, x in f.items() if k.endswith("_after_randomisation")]
    if not sim:
        return ""
    k, x = sim[0]
    return escape(f"{k.replace('_after_randomisation', '')} {fmt(x)} after randomisation "
                  f"(threshold {fmt(f.get('threshold'))})")


def _trust_html(section: Section) -> str:
    t = section.trust
    names = [r.method for r in section.runs if r.explanation is not None]
    names.sort(key=lambda m: -(lead_margin(section, m) or -np.inf))  # the most faithful first
    figs = sorted({k for q in t.quality.values() for k in q})
    head = "".join(f"<th>{escape(k)}</th>" for k in figs)
    rows = [f"<table class=\"uv-grid\"><tr><th>method</th><th>faithful? "
            f"({term('faithfulness_margin')})</th><th>passes {term('sanity_check', 'sanity')}?</th>"
            f"<th>{term('agreement', 'agrees with the others')}</th>{head}</tr>"]
    ag = t.agreement
    rules: dict[str, str] = {}
    for n in names:
        v = t.verdicts.get(n, {})
        for check, verdict in v.items():
            rules.setdefault(check, str(verdict.get("rule", "")))
        a = "–"
        if ag is not None and n in ag.methods:
            j = ag.methods.index(n)
            others = [ag.rank[j, k] for k in range(len(ag.methods)) if k != j]
            a = fmt(float(np.nanmean(others))) if others and np.isfinite(others).any() else "–"
        q = t.quality.get(n, {})
        cells = "".join(f"<td>{fmt(q.get(k))}</td>" for k in figs)
        rows.append(f"<tr><td>{escape(display_name(n))}</td>"
                    f"<td>{_answer(v.get('faithful'), _faithful_detail(v.get('faithful')))}</td>"
                    f"<td>{_answer(v.get('sanity'), _sanity_detail(v.get('sanity')))}</td>"
                    f"<td>{a}</td>{cells}</tr>")
    summary = section_trust_summary(section)
    out = "".join(f'<p class="uv-narrative">{mark_terms(" ".join(summary.sentences))}</p>'
                  for _ in [0] if summary.sentences)
    out += "".join(f'<p class="uv-caution">Caution: {mark_terms(c)}</p>' for c in summary.cautions)
    out += "".join(rows) + "</table>"
    for check, rule in rules.items():
        out += f'<p class="uv-muted">{escape(check)}: {escape(rule)}.</p>'
    out += ('<p class="uv-muted">Agreement: Spearman rank correlation of |attribution| between '
            "methods (images pooled to 16×16 regions), averaged over the inputs; 1 = same ranking.</p>")
    for note in t.notes:
        out += f'<p class="uv-muted">{escape(note)}</p>'
    return out


def _global_html(section: Section) -> str:
    g = section.global_facts
    parts = []
    margin = {m: lead_margin(section, m) for m in g.importance}
    best_first = sorted(g.importance, key=lambda m: -(margin[m] or -np.inf))
    for m in best_first:
        pairs = g.importance[m]
        rows = [Row(name, float("nan"), v) for name, v in pairs]
        parts.append(f'<div class="uv-block"><h4>{escape(display_name(m))}: mean |attribution|</h4>'
                     f"{bars_html(rows, show_value=False, signed=False)}</div>")
    if len(parts) > 2:
        parts = [parts[0], f"<details><summary>Mean |attribution| of the other {len(parts) - 1} "
                 f"methods (the first is the most faithful one)</summary>{''.join(parts[1:])}"
                 "</details>"]
    if g.rules:
        fid = (f" (agrees with the model on {100 * g.fidelity:.0f}% of held-out rows)"
               if g.fidelity is not None else "")
        parts.append(f"<h4>Rules of a depth-3 surrogate tree{escape(fid)}</h4>"
                     f"<pre>{escape(g.rules)}</pre>")
    if g.note:
        parts.append(f'<p class="uv-muted">{escape(g.note)}</p>')
    return "".join(parts) or '<p class="uv-muted">No global view for this kind of input.</p>'


def _recourse_html(section: Section) -> str:
    if section.counterfactuals is None and not section.recourse_note:
        return ""
    from .recourse import report_recourse_html

    return report_recourse_html(section.counterfactuals, section.anchors, section.recourse_note)


def _section_html(section: Section, k: int, max_samples: int) -> str:
    ok = [r for r in section.runs if r.explanation is not None]
    n = section.inputs.shape[0]
    shown = min(n, max_samples)
    desc = f"<p>{escape(section.description)}</p>" if section.description else ""
    samples = "".join(_sample_html(section, i, ok) for i in range(shown))
    more = f'<p class="uv-muted">{n - shown} more inputs explained but not shown.</p>' if n > shown else ""
    repro = json.dumps(jsonable(section.reproducibility()), indent=2, sort_keys=True)
    return (f'<section id="model-{k}"><h2>Model: {escape(section.model_name)}</h2>{desc}'
            f'<p class="uv-muted" data-testid="counts">{n} inputs of shape '
            f"{escape(str(tuple(section.inputs.shape[1:])))} ({escape(section.modality)}) · "
            f"{counts_line(section)}</p>"
            f"{samples}{more}<h3>Trust card</h3>{_trust_html(section)}"
            f"<h3>Methods</h3>{_runs_table(section)}"
            f"<h3>Global view</h3>{_global_html(section)}{_recourse_html(section)}"
            f'<details data-testid="reproducibility"><summary>Reproducibility: the settings, '
            f"seeds and fingerprint {escape(str(section.fingerprint))} to rerun this section "
            f"(JSON)</summary><pre>{escape(repro)}</pre></details></section>")


def render_report(report: Report, *, max_samples: int | None = None) -> str:
    """The full HTML page of a :class:`~unveil.report.Report`."""
    limit = max_samples if max_samples is not None else getattr(report, "max_samples", 8)
    nav = ""
    if len(report.sections) > 1:
        nav = "<p>" + " · ".join(f'<a href="#model-{k}">{escape(s.model_name)}</a>'
                                 for k, s in enumerate(report.sections)) + "</p>"
    body = [f"<h1>{escape(report.title)}</h1>",
            f'<p class="uv-muted">Created {escape(report.created)} with unveil '
            f"{escape(report.versions.get('unveil', '?'))}.</p>", nav]
    body += [_section_html(s, k, limit) for k, s in enumerate(report.sections)]
    env: dict[str, Any] = {"versions": report.versions, "created": report.created}
    if report.command:
        env["command"] = report.command
    body.append(f'<details data-testid="environment"><summary>Environment: versions of Python '
                f"and the libraries (JSON)</summary><pre>{escape(json.dumps(env, indent=2))}"
                "</pre></details>")
    body.append(glossary_html("".join(body)))
    return document("".join(body), report.title)
