"""Model-level views of the dashboard, for table models: a surrogate that mimics the model (with
its fidelity on held-out rows and a fidelity-versus-size curve), the model's permutation
importance, and a bias audit for a column the user picks."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from ..audit.bias import MAX_GROUPS
from ..surrogate.blackbox import model_rows
from ._routes import _BUSY, _ERRORS, ModelName
from ._schemas import (
    AuditRequest,
    AuditResponse,
    CurvePoint,
    DistillRequest,
    DistillResponse,
    RuleOut,
)
from ._schemas_user import CandidateOut
from ._state import ApiError, Entry, Store
from ._work import Work

__all__ = ["global_router", "rule_text"]

PageId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]
UploadQuery = Annotated[str | None, Query(pattern=r"^[0-9a-f]{16}$")]


def _names(entry: Entry, n: int) -> list[str]:
    return entry.columns(n)


def _candidate_columns(X: np.ndarray, names: list[str], entry: Entry | None = None) -> list[CandidateOut]:
    """Columns with 2 to MAX_GROUPS values; those the model does not read first (an audit's
    natural candidates: a sensitive attribute kept out of the model)."""
    aside = set(entry.kept_aside or []) if entry is not None else set()
    out = []
    for j, name in enumerate(names):
        k = int(np.unique(X[:, j]).size)
        if 2 <= k <= MAX_GROUPS:
            out.append(CandidateOut(name=name, n_values=k, kept_aside=name in aside,
                                    values=entry.categories.get(name) if entry is not None else None))
    return sorted(out, key=lambda c: not c.kept_aside)


def _number(v: float) -> str:
    return f"{v:.4g}"


def _conditions_in_words(conditions: Any, categories: dict[str, list[str]]) -> str:
    """A rule's conditions joined with AND (as the surrogate writes them), a coded text column's
    thresholds written as the words they let through (``region in {north, south}``)."""
    parts = []
    seen: list[str] = []
    for c in conditions:
        if c.name in seen:
            continue
        seen.append(c.name)
        same = [d for d in conditions if d.name == c.name]
        lo = max((d.threshold for d in same if d.op == ">"), default=None)
        hi = min((d.threshold for d in same if d.op == "<="), default=None)
        words = categories.get(c.name)
        if words:
            chosen = [w for k, w in enumerate(words)
                      if (lo is None or k > lo) and (hi is None or k <= hi)]
            if chosen and len(chosen) < len(words):
                parts.append(f"{c.name} = {chosen[0]}" if len(chosen) == 1
                             else f"{c.name} in {{{', '.join(chosen)}}}")
                continue
        if lo is not None and hi is not None:
            parts.append(f"{_number(lo)} < {c.name} <= {_number(hi)}")
        elif lo is not None:
            parts.append(f"{c.name} > {_number(lo)}")
        elif hi is not None:
            parts.append(f"{c.name} <= {_number(hi)}")
    return " AND ".join(parts)


def rule_text(rule: Any, categories: dict[str, list[str]]) -> str:
    """A surrogate's rule as it prints, with coded text columns in words."""
    text = str(rule)
    if not categories or not rule.conditions or not text.startswith("IF ") or " THEN " not in text:
        return text
    if not any(c.name in categories for c in rule.conditions):
        return text
    return "IF " + _conditions_in_words(rule.conditions, categories) + text[text.index(" THEN "):]


def global_router(store: Store, work: Work | None = None) -> APIRouter:
    """Routes under ``/api`` for surrogates and audits (run on ``work``'s threads)."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)

    @r.get("/models/{model}/columns", response_model=list[CandidateOut])
    def columns(model: ModelName, upload: UploadQuery = None) -> list[CandidateOut]:
        e = store.entry(model)
        X, _, _ = store.table(e, upload)
        return _candidate_columns(X, _names(e, X.shape[1]), e if store.in_data_units(upload) else None)

    @r.post("/distill", response_model=DistillResponse, responses=_BUSY)
    async def distill(req: DistillRequest) -> DistillResponse:
        e = store.entry(req.model)
        X, y, pre = store.table(e, req.upload)
        kw: dict[str, Any] = {"y": y, "feature_names": _names(e, X.shape[1]), "class_names": e.class_names,
                              "preprocess": pre}

        def job() -> tuple[Any, Any, Any]:
            from ..surrogate import distill as fit
            from ..surrogate import permutation_importance

            m = store.model(e)
            with work.hold(e.name, m):
                sur = fit(m, X, kind=req.kind, max_depth=req.max_depth, **kw)
                sizes = list(range(1, min(X.shape[1], 8) + 1)) if req.kind == "linear" else list(range(1, 7))
                curve = sur.curve(sizes)  # the model's answers are reused
                # shuffling a column gives the same answers in any units: use the model's
                rows = model_rows(X, pre)
                imp = permutation_importance(m, rows, feature_names=e.columns(rows.shape[1]) if pre is None else (
                    e.feature_names if e.feature_names and len(e.feature_names) == rows.shape[1] else None),
                    n_repeats=3)
            return sur, curve, imp

        sur, curve, imp = await work.run(job, what=f"the {req.kind} surrogate",
                                         advice="Upload a smaller table or choose a smaller depth.")
        store.record(e, f"Surrogate ({sur.kind}, {sur.complexity} {sur.complexity_unit}) fitted in the "
                        f"dashboard on {X.shape[0]} rows: agrees with the model on "
                        f"{100 * sur.fidelity():.0f}% of the held-out rows.")
        words = e.categories if store.in_data_units(req.upload) else {}
        rules = [] if req.kind == "linear" else [
            RuleOut(text=rule_text(rule, words), coverage=rule.coverage, fidelity=rule.fidelity)
            for rule in sur.rules()]
        text = sur.describe()
        if rules:  # the figures, then the rules in words
            text = "\n".join([text.splitlines()[0], *(r.text for r in rules)])
        top = dict(imp.ranking()[:10])
        return DistillResponse(
            kind=sur.kind, n_rows=int(X.shape[0]), held_out_rows=int(sur.held_out["n_rows"]),
            complexity=sur.complexity, complexity_unit=sur.complexity_unit, fidelity=sur.fidelity(),
            accuracy=sur.held_out.get("accuracy"), model_accuracy=sur.held_out.get("model_accuracy"),
            text=text, rules=rules,
            curve=[CurvePoint(size=v, complexity=c, fidelity=f)
                   for v, c, f in zip(curve.values, curve.complexity, curve.fidelity)],
            importance={k: float(v) for k, v in top.items()})

    @r.post("/audit", response_model=AuditResponse, responses=_BUSY)
    async def audit(req: AuditRequest) -> AuditResponse:
        e = store.entry(req.model)
        X, y, pre = store.table(e, req.upload)
        names = _names(e, X.shape[1])
        if req.sensitive not in names:
            raise ApiError(422, f"no column named {req.sensitive!r}; the columns are {', '.join(names)}")
        if e.class_names is not None and req.positive >= len(e.class_names):
            raise ApiError(422, f"positive class {req.positive} is out of range: the model has "
                                f"{len(e.class_names)} classes")

        words = e.categories.get(req.sensitive) if store.in_data_units(req.upload) else None

        def job() -> tuple[Any, list[str], str]:
            from ..audit import bias_audit
            from ..report.audit_page import audit_sentences

            m = store.model(e)
            with work.hold(e.name, m):
                res = bias_audit(m, X, sensitive=req.sensitive, y=y, feature_names=names,
                                 positive=req.positive, preprocess=pre, class_names=e.class_names,
                                 group_names=None if words is None else dict(enumerate(words)))
            page = store.add_page(res.to_html(title=f"Bias audit of {req.sensitive} · {e.name}"))
            return res, audit_sentences(res), page

        res, sentences, page = await work.run(job, what=f"the bias audit of {req.sensitive!r}",
                                              advice="Upload a smaller table.")
        store.record(e, f"Bias audit of {req.sensitive} (run in the dashboard): {res.verdict.upper()}. "
                        + " ".join(sentences[:2]))
        return AuditResponse(
            verdict=res.verdict, sentences=sentences, flags=[str(f) for f in res.flags],
            selection_rates={g: m["selection_rate"] for g, m in res.group_metrics.items()},
            demographic_parity_difference=res.demographic_parity_difference,
            equalized_odds_difference=res.equalized_odds_difference, flip_rate=res.flip_rate, page=page)

    @r.get("/audits/{page}", response_class=HTMLResponse)
    def audit_page(page: PageId) -> HTMLResponse:
        return HTMLResponse(store.page(page), headers={
            "Content-Disposition": 'attachment; filename="unveil-audit.html"'})

    return r
