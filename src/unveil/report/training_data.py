"""Which training examples drove a decision, for people: thumbnails or rows, and how far the
scores can be trusted, in words.

:func:`training_data_section` is an HTML fragment (its own ``<style>``, no script, no external
resource) for notebooks and reports: per explained row its strongest proponents (training rows
whose weight lowered its loss) and opponents, each with its index in the training set, its
label and score, and the image (a PNG thumbnail) or the row's values under their column names;
then the measured quality figures (leave-one-out correlation, LDS, mislabel detection AUC)
explained in a sentence each. :func:`training_data_page` wraps it into one page.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from .html import CSS, document, fmt
from .png import data_uri, upscale

if TYPE_CHECKING:
    from ..data_attribution.result import TrainingAttribution

__all__ = ["evaluation_sentences", "training_data_page", "training_data_section"]

_STYLE = (".uv .uv-td{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-start}"
          ".uv .uv-td figure img{width:72px}.uv .uv-td figure{max-width:110px;overflow-wrap:anywhere}"
          ".uv .uv-td figure.uv-td-row{max-width:260px;text-align:left}"
          ".uv .uv-pro{color:#1b7a3a}.uv .uv-opp{color:#b3261e}")
_METHODS = {
    "influence": "influence functions (Koh & Liang, 2017): how the test loss would move if a training row "
                 "counted more, from the curvature of the training loss",
    "representer": "representer points (Yeh et al., 2018): each training row's share of the last layer's "
                   "weights, times its similarity to the explained row",
    "tracin": "TracIn (Pruthi et al., 2020): agreement of training and test gradients over saved checkpoints",
    "trak": "TRAK (Park et al., 2023): randomly projected gradients and a linear model of the network",
}


def _is_image(row: np.ndarray) -> bool:
    return row.ndim == 2 or (row.ndim == 3 and (row.shape[0] in (1, 3) or row.shape[-1] in (1, 3)))


def _thumb(row: np.ndarray) -> str:
    a = np.asarray(row, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return f'<img src="{data_uri(upscale(a, 72))}" alt="">'


def _values(row: np.ndarray, names: list[str] | None, most: int = 6) -> str:
    flat = np.asarray(row).reshape(-1)
    cols = names if names and len(names) == flat.size else [f"x{j}" for j in range(flat.size)]
    shown = ", ".join(f"{escape(str(c))}={fmt(float(v))}" for c, v in zip(cols[:most], flat[:most]))
    more = f", … ({flat.size - most} more)" if flat.size > most else ""
    return f'<span class="uv-muted">{shown}{more}</span>'


def _show(res: TrainingAttribution, rows: np.ndarray | None, pos: int) -> str:
    if rows is None:
        return ""
    row = np.asarray(rows[pos])
    if row.dtype.kind not in "biuf":
        return ""
    return _thumb(row) if _is_image(row) else _values(row, res.feature_names)


def _show_test(res: TrainingAttribution, t: int) -> str:
    """The explained row, drawn like the training rows (reshaped to their shape if they are
    images of the same size)."""
    if res.test_rows is None:
        return ""
    row = np.asarray(res.test_rows[t])
    if res.train_rows is not None and row.size == np.asarray(res.train_rows[0]).size:
        row = row.reshape(np.asarray(res.train_rows[0]).shape)
    return _show(res, row[None], 0)


def _cards(res: TrainingAttribution, items: list[dict[str, Any]], kind: str, target: str) -> str:
    if not items:
        return f'<p class="uv-muted">none (no training row {"helps" if kind == "pro" else "hurts"} this decision)</p>'
    out = []
    for it in items:
        note = ""
        if kind == "pro" and it["class"] != target and res.params.get("loss") != "mse":
            note = '<br><span class="uv-bad" title="a proponent labelled differently: check its label">other label</span>'
        shown = _show(res, res.train_rows, it["position"])
        wide = ' class="uv-td-row"' if shown.startswith("<span") else ""  # table values, not a thumbnail
        out.append(f'<figure data-testid="td-{kind}"{wide}>{shown}'
                   f'<figcaption>#{it["index"]} · {escape(it["class"])}<br>'
                   f'<span class="uv-{kind}">{fmt(it["score"])}</span>{note}</figcaption></figure>')
    return f'<div class="uv-td">{"".join(out)}</div>'


def _corr(v: float) -> str:
    """A correlation or AUC to 3 decimals (0.999 must not read as 1)."""
    return f"{v:.3f}" if np.isfinite(v) else "–"


def evaluation_sentences(res: TrainingAttribution) -> list[str]:
    """The measured figures of ``res.evaluation`` in words, one sentence each."""
    ev, out = res.evaluation, []
    if "loo_correlation" in ev:
        out.append(f"Leave-one-out check: {int(ev.get('loo_rows', 0)) or 'several'} training rows were removed one at "
                   f"a time and the model retrained; the predicted and actual changes of the test losses correlate at "
                   f"{_corr(ev['loo_correlation'])} (Pearson; 1 is perfect, 0 is no relation).")
    if "lds" in ev:
        out.append(f"Linear datamodeling score {_corr(ev['lds'])}: over models retrained on random halves of the "
                   "training set, how well the scores rank the test outcomes (Spearman; 1 is perfect, 0 is chance).")
    if "mislabel_auc" in ev:
        share = ev.get("mislabel_share", 0.05)
        out.append(f"Mislabel detection: with {100 * share:.0f}% of the labels flipped, ranking rows by their "
                   f"self-influence finds the flipped ones with ROC AUC {_corr(ev['mislabel_auc'])} (0.5 is chance, "
                   "1 finds all of them first).")
    known = {"loo_correlation", "loo_rows", "loo_spearman", "loo_correlation_per_test", "lds", "lds_subsets",
             "mislabel_auc", "mislabel_share"}
    for k, v in ev.items():
        if k not in known:
            out.append(f"{escape(k.replace('_', ' '))}: {fmt(float(v))}.")
    if not out:
        out.append("Not measured against retraining yet: the scores are estimates (see "
                   "unveil.data_attribution.evaluation for leave-one-out, LDS and mislabel checks).")
    return out


def training_data_section(res: TrainingAttribution, *, k: int = 5, max_tests: int = 10,
                          tests: list[int] | None = None) -> str:
    """An HTML fragment: the method and its quality in words, then per explained row the top
    ``k`` proponents and opponents with their images or values."""
    pick = list(range(min(res.n_test, max_tests))) if tests is None else tests[:max_tests]
    what = _METHODS.get(res.method, res.method)
    solver = res.params.get("solver")
    parts = [f"<style>{CSS}{_STYLE}</style><div class=\"uv\" data-testid=\"training-data\">",
             "<h3>Which training examples drove these decisions</h3>",
             f'<p class="uv-muted">{res.n_train} training rows scored for {res.n_test} explained '
             f"row{'s' if res.n_test != 1 else ''} by {escape(what)}"
             f"{f' (solver {escape(str(solver))})' if solver else ''}. A <b class=\"uv-pro\">proponent</b> "
             "(positive score) is a training row that made the target more likely (giving it more weight in "
             "training lowers the explained row's loss), an <b class=\"uv-opp\">opponent</b> (negative) one "
             "that made it less likely.</p>",
             '<ul data-testid="td-evaluation">' + "".join(f"<li>{s}</li>" for s in evaluation_sentences(res))
             + "</ul>"]
    for t in pick:
        top = res.top(t, k)
        target = res.class_of(res.test_targets[t])
        parts.append(f'<div class="uv-sample"><h4>explained row {t} — target {escape(target)}</h4>'
                     f"{_show_test(res, t)}"
                     f'<p>Strongest proponents</p>{_cards(res, top["proponents"], "pro", target)}'
                     f'<p>Strongest opponents</p>{_cards(res, top["opponents"], "opp", target)}</div>')
    if len(pick) < res.n_test:
        parts.append(f'<p class="uv-muted">{res.n_test - len(pick)} more explained rows not shown.</p>')
    parts.append("</div>")
    return "".join(parts)


def training_data_page(res: TrainingAttribution, *, title: str | None = None, k: int = 5) -> str:
    """:func:`training_data_section` as one self-contained page (up to 50 explained rows)."""
    return document(training_data_section(res, k=k, max_tests=50), title or "Which training examples drove these decisions")
