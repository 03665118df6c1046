"""Concept maps in the dashboard: for the chosen input, the most relevant concepts (channels) of
a layer, each with its conditional heat map (CRP) and its reference examples from the model's
data (relevance maximisation)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..report.crp import heat_uri, image_uri
from ..report.facts import class_name
from ._routes import _BUSY, _ERRORS, ModelName
from ._schemas import _INTEGRAL, _ONE_INPUT, Name, Target, UploadId, _Strict
from ._state import ApiError, Entry, Store
from ._work import Work

__all__ = ["ConceptMapsRequest", "ConceptMapsResponse", "concept_layers", "concept_maps_router"]

#: Most rows of the model's data searched for reference examples (the first ones).
MAX_REFERENCE_ROWS = 256
LayerName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.]+$")]


class LayerOut(BaseModel):
    """A layer whose channels (or units) can be taken as concepts."""

    name: str
    kind: str
    channels: int


class LayersOut(BaseModel):
    """The model's conditionable layers and the one suggested first (the last convolution)."""

    layers: list[LayerOut]
    default: str | None


class ConceptMapsRequest(_Strict):
    """The top concepts of one input (a sample or an upload row) at a layer."""

    model_config = ConfigDict(json_schema_extra=_ONE_INPUT)

    model: Name
    sample: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    upload: UploadId | None = None
    row: Annotated[int, Field(ge=0, le=10_000), _INTEGRAL] = 0
    layer: LayerName
    k: Annotated[int, Field(ge=1, le=12), _INTEGRAL] = 4
    target: Target = "predicted"
    references: Annotated[int, Field(ge=0, le=8), _INTEGRAL] = 4
    mode: Literal["relevance", "activation"] = "relevance"


class ReferenceOut(BaseModel):
    """A reference example of a concept: its row of the model's data, score and picture."""

    row: int
    value: float
    image: str | None = None  # a data URI (images only)


class ConceptOut(BaseModel):
    """One concept: its channel, relevance at the layer and conditional heat map."""

    channel: int
    name: str
    relevance: float
    share: float
    heatmap: str | None = None  # a data URI over the input (images)
    values: list[float] | None = None  # the conditional relevance per input feature (other inputs)
    references: list[ReferenceOut] = []


class ConceptMapsResponse(BaseModel):
    """The input, the explained class and its top concepts at the layer."""

    model: str
    layer: str
    target: str
    score: float
    input_image: str | None = None
    concepts: list[ConceptOut]
    note: str


def concept_layers(model: Any) -> LayersOut:
    """Convolutions and dense layers of ``model`` (leaf modules), in definition order."""
    if not isinstance(model, nn.Module):
        return LayersOut(layers=[], default=None)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            out.append(LayerOut(name=name, kind=type(m).__name__, channels=int(m.out_channels)))
        elif isinstance(m, nn.Linear):
            out.append(LayerOut(name=name, kind="Linear", channels=int(m.out_features)))
    convs = [lay.name for lay in out if lay.kind.startswith("Conv")]
    default = convs[-1] if convs else (out[-2].name if len(out) > 1 else None)
    return LayersOut(layers=out, default=default)


def _module(store: Store, e: Entry) -> nn.Module:
    m = store.model(e)
    module = getattr(m, "module", m)
    if not isinstance(module, nn.Module):
        raise ApiError(422, f"model {e.name!r} is not a torch module: concept relevance needs its layers")
    return module


def concept_maps_router(store: Store, work: Work | None = None) -> APIRouter:
    """Routes under ``/api`` for concept maps (the relevance passes run on ``work``'s threads)."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)

    @r.get("/models/{model}/concept-layers", response_model=LayersOut)
    def layers(model: ModelName) -> LayersOut:
        e = store.entry(model)
        return concept_layers(_module(store, e))

    @r.post("/concepts", response_model=ConceptMapsResponse, responses=_BUSY)
    async def concepts(req: ConceptMapsRequest) -> ConceptMapsResponse:
        from ..concepts import top_concepts

        e = store.entry(req.model)
        x, _, _ = store.input(e, req.sample, req.upload, req.row)
        module = _module(store, e)
        known = {lay.name: lay for lay in concept_layers(module).layers}
        if req.layer not in known:
            names = ", ".join(known) or "none"
            raise ApiError(422, f"layer {req.layer!r} is not a convolution or dense layer of {e.name!r}; "
                                f"choose one of: {names}")
        if isinstance(req.target, int) and e.class_names and req.target >= len(e.class_names):
            raise ApiError(422, f"target {req.target} is out of range: the model has {len(e.class_names)} classes")
        if not x.is_floating_point():
            raise ApiError(422, f"model {e.name!r} takes integer inputs (token ids): concept relevance "
                                "propagates to float inputs only")

        def job() -> ConceptMapsResponse:
            model = store.explainable(e)
            with work.hold(e.name, model):
                res = top_concepts(model, x, layer=req.layer, k=min(req.k, known[req.layer].channels),
                                   target=req.target)
                if req.references and e.reference is not None and e.reference.is_floating_point():
                    rows = e.reference[:MAX_REFERENCE_ROWS]
                    if tuple(rows.shape[1:]) == tuple(x.shape[1:]):
                        res.with_references(model, rows, k=min(req.references, rows.shape[0]), mode=req.mode)
            return _response(e, res)

        return await work.run(job, what=f"the concepts at {req.layer}",
                              advice="Choose a layer with fewer channels or fewer concepts.")

    return r


def _response(e: Entry, res: Any) -> ConceptMapsResponse:
    x = np.asarray(res.inputs[0])
    is_image = x.ndim == 3
    maps = res.heatmaps[0]
    scale = float(np.percentile(np.abs(maps.sum(axis=1) if maps.ndim == 4 else maps), 99.5)) or 1.0
    refs = {tuple(ref.channels): ref for ref in res.references}
    share = res.share[0]
    out = []
    for j, chans in enumerate(res.concepts[0]):
        c = int(chans[0])
        ref = refs.get(tuple(chans))
        items = []
        if ref is not None:
            for q, row in enumerate(ref.indices.tolist()):
                crop = ref.patches[q] if ref.patches is not None else ref.inputs[q]
                items.append(ReferenceOut(row=int(row), value=_finite(ref.values[q]),
                                          image=image_uri(crop, min_side=48) if is_image else None))
        out.append(ConceptOut(
            channel=c, name=res.concept_name(chans), relevance=_finite(res.channel_relevance[0, c]),
            share=_finite(share[c]), heatmap=heat_uri(x, maps[j], scale=scale) if is_image else None,
            values=None if is_image else [_finite(v) for v in np.ravel(maps[j])[:1000]], references=items))
    target = int(res.targets[0])
    return ConceptMapsResponse(
        model=e.name, layer=res.layer, target=class_name(target, e.class_names), score=_finite(res.scores[0]),
        input_image=image_uri(x) if is_image else None, concepts=out,
        note=("Each map is the relevance that flows through one channel of the layer (CRP, "
              f"{res.composite}); over all channels they add up to the LRP map (when no shortcut bypasses "
              "the layer). References: the rows "
              "of the model's data where the channel is most relevant for their predicted class."))


def _finite(v: Any) -> float:
    f = float(v)
    return f if np.isfinite(f) else 0.0
