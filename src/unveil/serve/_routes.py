"""The dashboard's page and JSON API routes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from ..core.reference import describe_outside
from ..core.registry import get_method, list_methods
from ..errors import UnveilError
from ..report import Report, Section, build_section, check_options, skip_not_applicable
from ..report.facts import class_name, degenerate_reason, is_signed, prediction, sample_narrative
from ..report.html import bars_html
from ..report.narrative import display_name
from ..report.png import data_uri, upscale
from ..report.render import (
    display_kind,
    feature_table,
    image_rgb,
    image_tiles,
    sequence_tile,
    token_spans,
)
from ..version import __version__
from ._schemas import (
    ErrorOut,
    ExplainRequest,
    ExplainResponse,
    MapOut,
    MethodOut,
    MetricsOut,
    ModelOut,
    PredictionOut,
    SampleOut,
    SamplesOut,
    SanityRequest,
    SanityResponse,
    UploadOut,
)
from ._state import ApiError, Entry, Store
from ._uploads import DEFAULT_MAX_PIXELS, parse_upload
from ._work import Work

__all__ = ["api_router", "page_router"]

RunId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]
ModelName = Annotated[str, PathParam(max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]
MethodPath = Annotated[str, PathParam(max_length=64, pattern=r"^[a-z0-9_]+$")]

def _error(description: str) -> dict[str, Any]:
    """An error response as the schema shows it: JSON ``{"detail": "..."}`` on every route (an
    HTML download's errors are JSON too)."""
    return {"description": description,
            "content": {"application/json": {"schema": ErrorOut.model_json_schema()}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed request, or a Host header the dashboard does not serve"),
    403: _error("A write from another site (cross-origin)"),
    404: _error("Unknown model, sample, upload or run"),
    413: _error("Body, image or table too large"),
    422: _error("Invalid input"),
}
#: Responses of the routes that run in the worker pool.
_BUSY: dict[int | str, dict[str, Any]] = {
    503: _error("The request did not finish within the time budget"),
}
_ADVICE = ("Choose fewer or cheaper methods (exact Shapley values and LIME/KernelSHAP on images are "
           "slow), or fewer samples/steps in the options.")


def page_router(templates_dir: Path) -> APIRouter:
    """``GET /``: the dashboard page."""
    from fastapi.templating import Jinja2Templates

    templates = Jinja2Templates(directory=str(templates_dir))
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Any:
        return templates.TemplateResponse(request, "index.html", {"version": __version__})

    return router


def _thumb(entry: Entry, i: int) -> SampleOut:
    assert entry.samples is not None
    x = entry.samples[i].numpy()
    label = None if entry.labels is None else class_name(int(entry.labels[i]), entry.class_names)
    if entry.modality == "image" and x.ndim in (2, 3):
        img = image_rgb(x if x.ndim == 3 else x[None])
        return SampleOut(index=i, label=label, thumbnail=data_uri(upscale(img, 64)))
    return SampleOut(index=i, label=label, preview=entry.preview(i))


def _map_out(run: Any) -> MapOut:
    e = run.explanation
    flat = None if e is None else degenerate_reason(e, 0)
    out = MapOut(method=run.method, title=display_name(run.method), status=run.shown_status,
                 note=run.error or run.skipped or flat, seconds=run.seconds, n_evals=run.n_evals,
                 kind=None if e is None else display_kind(e))
    if e is None:
        return out
    signed = is_signed(e)  # a magnitude is drawn in one hue, a signed map red/blue
    if out.kind == "image":
        out.image = image_tiles(e, 0, signed=signed)[1]
    elif out.kind == "table":
        out.html = bars_html(feature_table(e, 0, top_k=10))
    elif out.kind == "text":
        out.html = token_spans(e, 0, signed=signed)
    else:
        out.image = sequence_tile(e, 0, signed=signed)
    return out


def _metrics(section: Section) -> list[MetricsOut]:
    t = section.trust
    ag = t.agreement
    out = []
    for r in section.runs:
        if r.explanation is None:
            continue
        a = None
        if ag is not None and r.method in ag.methods:
            j = ag.methods.index(r.method)
            others = [float(ag.rank[j, k]) for k in range(len(ag.methods)) if k != j]
            fin = [v for v in others if np.isfinite(v)]
            a = float(np.mean(fin)) if fin else None
        figs = {k: v for k, v in t.quality.get(r.method, {}).items() if np.isfinite(v)}
        for v in t.verdicts.get(r.method, {}).values():
            for k, x in v.get("figures", {}).items():
                if isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x):
                    figs[k] = float(x)
        out.append(MetricsOut(method=r.method, figures=figs, agreement=a,
                              verdicts={c: v.get("answer") for c, v in t.verdicts.get(r.method, {}).items()}))
    return out


def _response(section: Section, run_id: str) -> ExplainResponse:
    p = prediction(section, 0)
    ok = [r for r in section.runs if r.explanation is not None]
    nar = sample_narrative(section, 0, ok)
    first = ok[0].explanation if ok else None
    outside = None if first is None else describe_outside(
        first.quality.get("in_distribution", {}), 0)
    input_image = None
    if first is not None and display_kind(first) == "image":
        input_image = image_tiles(first, 0)[0]
    mean_ag = section.trust.agreement.mean_rank() if section.trust.agreement is not None else None
    return ExplainResponse(
        run=run_id,
        prediction=PredictionOut(label=p.label, probability=p.prob, target=p.target,
                                 true_label=p.true_label, outside_data=outside),
        input_image=input_image, narrative=" ".join(nar.sentences), cautions=nar.cautions,
        maps=[_map_out(r) for r in section.runs], metrics=_metrics(section),
        agreement=mean_ag if mean_ag is not None and np.isfinite(mean_ag) else None,
        metrics_note="; ".join(section.trust.notes) or None,
    )


def _has_attention(model: Any) -> bool | None:
    """Whether a torch model has attention modules unveil can read (None: not a module)."""
    if not isinstance(model, torch.nn.Module):
        return None
    from ..attention import find_sites
    from ..errors import ModelError

    try:
        return bool(find_sites(model))
    except ModelError:
        return False


def _methods_for(entry: Entry, has_attention: bool | None = None,
                 has_spatial: bool | None = None) -> list[MethodOut]:
    out = []
    for m in list_methods():
        reason = None
        if entry.modality is not None and entry.modality not in m.modalities:
            reason = f"made for {'/'.join(m.modalities)} inputs"
        elif (m.needs_gradients or m.needs_module) and entry.is_module is False:
            reason = "needs a differentiable torch model"
        elif m.family == "attention" and has_attention is False:
            reason = "the model has no attention layers"
        elif m.family == "cam" and has_spatial is False:
            reason = "the model has no convolutional layers (a CAM needs a spatial feature map)"
        out.append(MethodOut(name=m.name, title=display_name(m.name), family=m.family,
                             summary=m.summary, applies=reason is None, reason=reason))
    return out


def check_methods(methods: list[str], options: dict[str, Any], budget: Any) -> None:
    """Known methods, options only for them, and each option valid: a 422 before any work."""
    for name in methods:
        get_method(name)
    stray = sorted(set(options) - set(methods))
    if stray:
        raise ApiError(422, f"options given for {', '.join(map(repr, stray))}, which "
                            f"{'is' if len(stray) == 1 else 'are'} not among the methods")
    check_options(methods, options, budget)  # OptionError: 422


def api_router(store: Store, work: Work | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
               ) -> APIRouter:
    """The JSON API under ``/api``; heavy routes run on ``work``'s threads within its budget."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)

    @r.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @r.get("/models", response_model=list[ModelOut])
    def models() -> list[ModelOut]:
        return [ModelOut(name=e.name, description=e.description, modality=e.modality,
                         n_samples=e.n_samples(), class_names=e.class_names,
                         feature_names=e.feature_names) for e in store.entries.values()]

    @r.get("/models/{model}/methods", response_model=list[MethodOut])
    def methods(model: ModelName) -> list[MethodOut]:
        e = store.entry(model)
        from ._data import has_spatial_layers

        obj = store.model(e)
        return _methods_for(e, _has_attention(obj), has_spatial_layers(obj))

    @r.get("/models/{model}/samples", response_model=SamplesOut)
    def samples(model: ModelName, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                limit: Annotated[int, Query(ge=1, le=48)] = 24) -> SamplesOut:
        e = store.entry(model)
        n = e.n_samples()
        return SamplesOut(total=n, items=[_thumb(e, i) for i in range(offset, min(n, offset + limit))])

    @r.post("/models/{model}/uploads", response_model=UploadOut, status_code=201,
            responses={415: _error("Unsupported file type")},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload(model: ModelName, request: Request) -> UploadOut:
        e = store.entry(model)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > store.max_upload_bytes:
                raise ApiError(413, "request body too large: the limit is "
                                    f"{store.max_upload_bytes} bytes")
        if not body:
            raise ApiError(422, "the upload is empty")
        # parsed on a thread: a large table must not stall the other requests
        up = await run_in_threadpool(parse_upload, bytes(body), e, store.max_rows,
                                     store.max_table_rows, max_pixels=max_pixels)
        return UploadOut(id=store.add_upload(up), model=e.name, kind=up.kind,
                         rows=int(up.x.shape[0]), shape=list(up.x.shape))

    @r.post("/explain", response_model=ExplainResponse, responses=_BUSY)
    async def explain(req: ExplainRequest) -> ExplainResponse:
        e = store.entry(req.model)
        x, label, tokens = store.input(e, req.sample, req.upload, req.row)
        check_methods(req.methods, req.options, store.budget)
        if isinstance(req.target, int) and e.class_names and req.target >= len(e.class_names):
            raise ApiError(422, f"target {req.target} is out of range: the model has "
                                f"{len(e.class_names)} classes")

        def job() -> tuple[Section, str]:
            model = store.explainable(e)
            with work.hold(e.name, model):
                section = build_section(
                    model, x, list(dict.fromkeys(req.methods)), target=req.target,
                    options={k: dict(v) for k, v in req.options.items()}, budget=store.budget,
                    class_names=e.class_names, feature_names=e.feature_names, tokens=tokens,
                    labels=None if label is None else [label], model_name=e.name,
                    description=e.description, evaluate=req.evaluate, on_error="record",
                    retry_options={} if e.background is None else {"background": e.background})
            skip_not_applicable(section.runs)
            run_id = store.add_run(Report([section], title=f"unveil · {e.name}"))
            return section, run_id

        section, run_id = await work.run(job, what=f"explaining with {', '.join(req.methods)}",
                                         advice=_ADVICE)
        return _response(section, run_id)

    @r.post("/sanity", response_model=SanityResponse, responses=_BUSY)
    async def sanity(req: SanityRequest) -> SanityResponse:
        e = store.entry(req.model)
        x, _, _ = store.input(e, req.sample, req.upload, req.row)
        get_method(req.method)

        def job() -> Any:
            try:
                from ..metrics import sanity_check
            except ImportError:
                return None
            model = store.explainable(e)
            with work.hold(e.name, model):
                try:
                    return sanity_check(model, x, method=req.method)
                except UnveilError as exc:  # a method that needs background rows gets the model's
                    if e.background is None or "background=" not in str(exc):
                        raise
                return sanity_check(model, x, method=req.method,
                                    explain_options={"background": e.background})

        res = await work.run(job, what=f"the sanity check of {req.method}",
                             advice="Check a cheaper method (a gradient method such as saliency).")
        if res is None:
            return SanityResponse(method=req.method, available=False,
                                  note="the sanity check needs unveil.metrics, which is not installed")
        store.record_sanity(e, x, req.method, res)  # the session's report holds it
        final = float(res.final) if np.isfinite(res.final) else None
        return SanityResponse(method=req.method, available=True, passed=bool(res.passed),
                              verdict=res.verdict, reason=res.reason,
                              threshold=float(res.threshold), similarity=final,
                              note=f"{res.measure} after randomising {len(res.layers)} layers")

    @r.get("/runs/{run}/report", response_class=HTMLResponse)
    def report(run: RunId) -> Response:
        rep = store.run(run)
        return HTMLResponse(rep.html, headers={
            "Content-Disposition": 'attachment; filename="unveil-report.html"'})

    @r.get("/runs/{run}/explanations/{method}", response_class=Response,
           responses={200: {"content": {"application/octet-stream": {}}}})
    def explanation(run: RunId, method: MethodPath) -> Response:
        from .app import explanation_bytes

        exps = store.run(run).explanations
        if method not in exps:
            raise ApiError(404, f"run {run} has no explanation from {method!r}")
        return Response(explanation_bytes(exps[method]), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{method}.npz"'})

    return r
