"""HTML for explanations and reports: one self-contained page, images embedded as base64 PNG,
styles inline, no script and no external resource of any kind."""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.explanation import Explanation, jsonable
from .facts import class_name, prediction, sample_narrative, section_trust_summary
from .narrative import display_name
from .render import Row, display_kind, feature_table, image_tiles, sequence_tile, token_spans

if TYPE_CHECKING:
    from ._builder import MethodRun, Report, Section

__all__ = ["CSS", "document", "explanation_html", "render_report"]

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
.uv .uv-legend b.b{color:#2a6bbf}
"""

LEGEND = ('<p class="uv-legend">Colours: <b class="r">red</b> pushes towards the explained class, '
          '<b class="b">blue</b> against it; each map has its own colour scale.</p>')


def document(body: str, title: str) -> str:
    """A complete HTML page around ``body`` (which must already be escaped HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>body{{margin:1.5em auto;max-width:1200px;"
        f"padding:0 1em}}{CSS}</style></head><body><div class=\"uv\">{body}</div></body></html>\n"
    )


def _fmt(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.3g}"


def bars_html(rows: list[Row], *, show_value: bool = True) -> str:
    """A table of signed horizontal bars, one per row, scaled to the largest magnitude."""
    scale = max((abs(r.attribution) for r in rows), default=0.0) or 1.0
    out = ['<table class="uv-bars">']
    for r in rows:
        w = 100.0 * abs(r.attribution) / scale
        left, right = (w, 0.0) if r.attribution < 0 else (0.0, w)
        val = f"<td class=\"uv-muted\">{_fmt(r.value)}</td>" if show_value and np.isfinite(r.value) else ""
        out.append(
            f"<tr><td>{escape(r.name)}</td>{val}<td><div class=\"uv-axis\"><span class=\"uv-l\">"
            f"<i style=\"width:{left:.1f}%\"></i></span><span class=\"uv-r\"><i style=\"width:"
            f"{right:.1f}%\"></i></span></div></td><td>{r.attribution:+.3g}</td></tr>"
        )
    return "".join(out) + "</table>"


def _figure(uri: str, caption: str, *, wide: bool = False) -> str:
    cls = ' class="uv-wide"' if wide else ""
    return (f'<figure><img{cls} src="{uri}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def maps_html(items: list[tuple[str, Explanation]], i: int, *, top_k: int = 8) -> str:
    """Sample ``i`` as drawn by each (caption, explanation), side by side."""
    if not items:
        return '<p class="uv-muted">No method produced a map for this input.</p>'
    kind = display_kind(items[0][1])
    if kind == "image":
        tiles = [_figure(image_tiles(items[0][1], i)[0], "input")]
        tiles += [_figure(image_tiles(e, i)[1], cap) for cap, e in items]
        return '<div class="uv-maps">' + "".join(tiles) + "</div>"
    if kind == "table":
        return "".join(
            f'<div class="uv-block"><h4>{escape(cap)}</h4>{bars_html(feature_table(e, i, top_k=top_k))}</div>'
            for cap, e in items)
    if kind == "text":
        return "".join(f'<div class="uv-text"><b>{escape(cap)}:</b> {token_spans(e, i)}</div>'
                       for cap, e in items)
    return '<div class="uv-maps">' + "".join(
        _figure(sequence_tile(e, i), cap, wide=True) for cap, e in items) + "</div>"


def explanation_html(exp: Explanation, max_samples: int = 8, *, top_k: int = 10,
                     title: str | None = None) -> str:
    """A self-contained HTML fragment (its own ``<style>``) showing up to ``max_samples`` rows."""
    name = display_name(exp.method)
    n = min(len(exp), max(1, int(max_samples)))
    parts = [f"<style>{CSS}</style><div class=\"uv\"><h3>{escape(title or name)}</h3>", LEGEND]
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


# -- report ---------------------------------------------------------------------------------
def _runs_table(section: Section) -> str:
    rows = ["<table class=\"uv-grid\"><tr><th>method</th><th>status</th><th>time (s)</th>"
            "<th>model evaluations</th><th>note</th></tr>"]
    for r in section.runs:
        cls = {"ok": "uv-ok", "error": "uv-bad"}.get(r.status, "uv-muted")
        note = r.error or r.skipped or ""
        rows.append(f"<tr><td>{escape(display_name(r.method))}</td><td class=\"{cls}\">{r.status}"
                    f"</td><td>{r.seconds:.2f}</td><td>{r.n_evals}</td><td>{escape(note)}</td></tr>")
    return "".join(rows) + "</table>"


def _sample_html(section: Section, i: int, ok: list[MethodRun]) -> str:
    p = prediction(section, i)
    head = f"Input {i} · predicted {p.label}"
    if p.prob is not None:
        head += f" ({100 * p.prob:.0f}%)"
    if p.true_label is not None:
        head += f" · true: {p.true_label}"
    items = [(display_name(r.method), r.explanation) for r in ok if r.explanation is not None]
    nar = sample_narrative(section, i, ok)
    cautions = "".join(f'<p class="uv-caution">Caution: {escape(c)}</p>' for c in nar.cautions)
    return (f'<article class="uv-sample"><h4>{escape(head)}</h4>{maps_html(items, i)}'
            f'<p class="uv-narrative">{escape(" ".join(nar.sentences))}</p>{cautions}</article>')


def _answer(v: dict[str, Any] | None, detail: str) -> str:
    if v is None:
        return "–"
    answer = v.get("answer")
    word = ("unknown" if answer is None else
            '<span class="uv-ok">yes</span>' if answer else '<span class="uv-bad">no</span>')
    if v.get("answer") is None and "reason" in v.get("figures", {}):
        detail = str(v["figures"]["reason"])
    return f"{word} <span class=\"uv-muted\">{escape(detail)}</span>" if detail else word


def _faithful_detail(v: dict[str, Any] | None) -> str:
    f = (v or {}).get("figures", {})
    parts = []
    if "insertion_minus_deletion" in f and "random_order" in f:
        parts.append(f"insertion − deletion {_fmt(f['insertion_minus_deletion'])} vs "
                     f"{_fmt(f['random_order'])} random")
    for name in ("deletion", "insertion"):
        if f"{name}_auc" in f and f"random_{name}_auc" in f:
            parts.append(f"{name} {_fmt(f[name + '_auc'])} vs {_fmt(f['random_' + name + '_auc'])} random")
    return "; ".join(parts)


def _sanity_detail(v: dict[str, Any] | None) -> str:
    f = (v or {}).get("figures", {})
    sim = [(k, x) for k, x in f.items() if k.endswith("_after_randomisation")]
    if not sim:
        return ""
    k, x = sim[0]
    return f"{k.replace('_after_randomisation', '')} {_fmt(x)} after randomisation (threshold {_fmt(f.get('threshold'))})"


def _trust_html(section: Section) -> str:
    t = section.trust
    names = [r.method for r in section.runs if r.explanation is not None]
    figs = sorted({k for q in t.quality.values() for k in q})
    head = "".join(f"<th>{escape(k)}</th>" for k in figs)
    rows = [f"<table class=\"uv-grid\"><tr><th>method</th><th>faithful?</th><th>passes sanity?</th>"
            f"<th>agrees with the others</th>{head}</tr>"]
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
            a = _fmt(float(np.nanmean(others))) if others and np.isfinite(others).any() else "–"
        q = t.quality.get(n, {})
        cells = "".join(f"<td>{_fmt(q.get(k))}</td>" for k in figs)
        rows.append(f"<tr><td>{escape(display_name(n))}</td>"
                    f"<td>{_answer(v.get('faithful'), _faithful_detail(v.get('faithful')))}</td>"
                    f"<td>{_answer(v.get('sanity'), _sanity_detail(v.get('sanity')))}</td>"
                    f"<td>{a}</td>{cells}</tr>")
    summary = section_trust_summary(section)
    out = "".join(f'<p class="uv-narrative">{escape(" ".join(summary.sentences))}</p>'
                  for _ in [0] if summary.sentences)
    out += "".join(f'<p class="uv-caution">Caution: {escape(c)}</p>' for c in summary.cautions)
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
    for m, pairs in g.importance.items():
        rows = [Row(name, float("nan"), v) for name, v in pairs]
        parts.append(f'<div class="uv-block"><h4>{escape(display_name(m))}: mean |attribution|</h4>'
                     f"{bars_html(rows, show_value=False)}</div>")
    if g.rules:
        fid = (f" (agrees with the model on {100 * g.fidelity:.0f}% of held-out rows)"
               if g.fidelity is not None else "")
        parts.append(f"<h4>Rules of a depth-3 surrogate tree{escape(fid)}</h4>"
                     f"<pre>{escape(g.rules)}</pre>")
    if g.note:
        parts.append(f'<p class="uv-muted">{escape(g.note)}</p>')
    return "".join(parts) or '<p class="uv-muted">No global view for this kind of input.</p>'


def _section_html(section: Section, k: int, max_samples: int) -> str:
    ok = [r for r in section.runs if r.explanation is not None]
    n = section.inputs.shape[0]
    shown = min(n, max_samples)
    desc = f"<p>{escape(section.description)}</p>" if section.description else ""
    samples = "".join(_sample_html(section, i, ok) for i in range(shown))
    more = f'<p class="uv-muted">{n - shown} more inputs explained but not shown.</p>' if n > shown else ""
    repro = json.dumps(jsonable(section.reproducibility()), indent=2, sort_keys=True)
    return (f'<section id="model-{k}"><h2>Model: {escape(section.model_name)}</h2>{desc}'
            f'<p class="uv-muted">{n} inputs of shape {escape(str(tuple(section.inputs.shape[1:])))}'
            f" ({escape(section.modality)}) · fingerprint {escape(str(section.fingerprint))}</p>"
            f"<h3>Methods</h3>{_runs_table(section)}<h3>Inputs and explanations</h3>{LEGEND}"
            f"{samples}{more}<h3>Trust card</h3>{_trust_html(section)}"
            f"<h3>Global view</h3>{_global_html(section)}"
            f"<h3>Reproducibility</h3><pre>{escape(repro)}</pre></section>")


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
    body.append(f"<h2>Environment</h2><pre>{escape(json.dumps(env, indent=2))}</pre>")
    return document("".join(body), report.title)
