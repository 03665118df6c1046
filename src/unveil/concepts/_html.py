"""HTML of a TCAV result: an inline SVG bar chart with error bars and a plain table (no scripts,
no external resources). Works from :meth:`TCAVResult.to_dict`, so the report and the dashboard
draw the same thing."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["tcav_html", "tcav_svg"]

_W, _BAR, _GAP, _LEFT, _TOP, _H = 520, 40, 52, 44, 16, 180


def tcav_svg(d: dict[str, Any]) -> str:
    """The bar chart: one bar per concept (mean TCAV score, ±1 standard deviation over the
    random runs), the random concepts' mean ± sd as a grey band, significant bars filled."""
    names: list[str] = [*d["concepts"], "random (control)"]
    width = max(_W, _LEFT + len(names) * (_BAR + _GAP) + _GAP)

    def y(v: float) -> float:
        return _TOP + (1.0 - v) * _H

    parts = [f'<svg width="{width}" height="{_TOP + _H + 62}" '
             'role="img" aria-label="TCAV scores" style="font:11px sans-serif">']
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{_LEFT}" x2="{width - 4}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    rm, rs = float(d["random_mean"]), float(d["random_std"])
    lo, hi = max(0.0, rm - rs), min(1.0, rm + rs)
    parts.append(f'<rect x="{_LEFT}" y="{y(hi):.1f}" width="{width - 4 - _LEFT}" '
                 f'height="{y(lo) - y(hi):.1f}" fill="#888" opacity="0.18">'
                 f'<title>random concepts: {rm:.2f} ± {rs:.2f}</title></rect>')
    parts.append(f'<line x1="{_LEFT}" x2="{width - 4}" y1="{y(rm):.1f}" y2="{y(rm):.1f}" '
                 'stroke="#666" stroke-dasharray="4 3"/>')
    for i, name in enumerate(names):
        control = i == len(d["concepts"])
        if control:
            s, sd, sig = float(d["control_mean"]), float(d["control_std"]), False
            p = float(d["control_p"])
        else:
            s, sd, sig = float(d["scores"][i]), float(d["score_std"][i]), bool(d["significant"][i])
            p = float(d["p_corrected"][i])
        x = _LEFT + _GAP + i * (_BAR + _GAP)
        fill = "#bbbbbb" if control else "#2b6cb0" if sig else "#ffffff"
        tip = escape(f"{name}: {s:.2f} ± {sd:.2f}, {'p' if control else 'corrected p'} = {p:.3g}")
        parts.append(f'<rect x="{x}" y="{y(s):.1f}" width="{_BAR}" height="{y(0) - y(s):.1f}" '
                     f'fill="{fill}" stroke="#2b6cb0"><title>{tip}</title></rect>')
        cx = x + _BAR / 2
        a, b = y(min(1.0, s + sd)), y(max(0.0, s - sd))
        parts.append(f'<line x1="{cx}" x2="{cx}" y1="{a:.1f}" y2="{b:.1f}" stroke="#111"/>'
                     f'<line x1="{cx - 6}" x2="{cx + 6}" y1="{a:.1f}" y2="{a:.1f}" stroke="#111"/>'
                     f'<line x1="{cx - 6}" x2="{cx + 6}" y1="{b:.1f}" y2="{b:.1f}" stroke="#111"/>')
        if sig:
            parts.append(f'<text x="{cx}" y="{a - 4:.1f}" text-anchor="middle">*</text>')
        label = escape(name if len(name) <= 16 else name[:15] + "…")
        parts.append(f'<text x="{cx}" y="{_TOP + _H + 16}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{_LEFT}" y="{_TOP + _H + 36}">bars: mean ± sd over {d["n_random"]} '
                 'random runs; filled and * = significant</text>')
    parts.append(f'<text x="{_LEFT}" y="{_TOP + _H + 52}">grey band and dashed line: random '
                 'concepts (mean ± sd)</text>')
    parts.append("</svg>")
    return "".join(parts)


def tcav_html(d: dict[str, Any]) -> str:
    """Chart, table and the setup in words."""
    rows = []
    for i, name in enumerate(d["concepts"]):
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{d['scores'][i]:.3f} ± {d['score_std'][i]:.3f}</td>"
            f"<td>{d['p_scores'][i]:.3g}</td><td>{d['p_separation'][i]:.3g}</td>"
            f"<td>{d['p_corrected'][i]:.3g}</td>"
            f"<td>{d['cav_accuracy'][i]:.2f}</td><td>{escape(d['verdicts'][i])}</td></tr>")
    rows.append(
        f"<tr style=\"color:#555\"><td>random (control)</td><td>{d['control_mean']:.3f} ± "
        f"{d['control_std']:.3f}</td><td colspan=\"2\">{d['control_p']:.3g}</td><td>—</td><td>"
        f"{d['random_accuracy']:.2f}</td><td>a fresh random concept per run: should not be "
        "significant</td></tr>")
    mode = ("chosen for power" if d["n_random_mode"] == "auto" else "given")
    setup = (f"Class {escape(str(d['target_name']))} at layer <code>{escape(d['layer'])}</code>; "
             f"{d['n_inputs']} class inputs; {d['n_random']} random runs ({mode}; power "
             f"{d['power']:.2f} to detect a difference of {d['min_effect']:g} at the corrected "
             f"level); random concepts score {d['random_mean']:.2f} ± {d['random_std']:.2f}. "
             "A concept is significant when both its scores differ from the random concepts' "
             "(two-sided t-test) and its examples separate from random ones better than random "
             "concepts' do (one-sided prediction test), after Bonferroni over "
             f"{len(d['concepts'])} concept(s), α = {d['alpha']:g}.")
    return (
        '<div class="unveil-tcav" style="font-family:sans-serif">'
        f"<h4 style=\"margin:4px 0\">TCAV: which concepts does class "
        f"{escape(str(d['target_name']))} use?</h4>"
        f"{tcav_svg(d)}"
        '<table style="border-collapse:collapse;font-size:12px" border="1" cellpadding="3">'
        "<tr><th>concept</th><th>TCAV score</th><th>p (scores)</th><th>p (separation)</th>"
        "<th>corrected p</th>"
        "<th>CAV accuracy</th><th>verdict</th></tr>" + "".join(rows) + "</table>"
        f'<p style="font-size:12px;max-width:640px">{setup}</p></div>'
    )
