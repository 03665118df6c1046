"""The dashboard's Concepts view: TCAV on a served model.

``GET /api/models/{model}/layers`` lists the layers a concept can be read at (with a suggestion:
the last convolution or the last layer before the output), and ``POST /api/tcav`` scores
concepts — each given by samples of the model picked in the page, or by an uploaded set — for one
class at one layer, against random concepts drawn from the model's data. The class's inputs are
the model's samples of that class (by label when known, else by the model's prediction). The
answer says plainly whether each concept is significant or not distinguishable from random.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from torch import nn

from ._routes import _BUSY, _ERRORS, ModelName
from ._schemas import _INTEGRAL, UploadId, _Strict
from ._state import ApiError, Entry, Store
from ._work import Work

__all__ = ["ConceptIn", "LayersOut", "TcavRequest", "TcavResponse", "concepts_router"]

#: Most concepts and examples one request may name.
MAX_CONCEPTS, MAX_EXAMPLES = 6, 500
LayerName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")]
ConceptName = Annotated[str, Field(min_length=1, max_length=60)]
SampleIndex = Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL]


class LayersOut(BaseModel):
    """Layers of the model (dotted names) and the one suggested for concepts."""

    layers: list[str]
    suggested: str | None


class ConceptIn(_Strict):
    """A concept: a name and its examples — sample indices of the model, or an upload's id."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"oneOf": [
        {"required": ["samples"]}, {"required": ["upload"]}]})

    name: ConceptName
    samples: Annotated[list[SampleIndex], Field(min_length=1, max_length=MAX_EXAMPLES)] | None = None
    upload: UploadId | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ConceptIn:
        if (self.samples is None) == (self.upload is None):
            raise ValueError("give a concept's examples as exactly one of 'samples' (indices) or "
                             "'upload' (an id)")
        return self


class TcavRequest(_Strict):
    """TCAV of concepts for one class at one layer. ``n_random`` null: chosen for power."""

    model: ModelName
    layer: LayerName
    target: Annotated[int, Field(ge=0, le=100_000), _INTEGRAL]
    concepts: Annotated[list[ConceptIn], Field(min_length=1, max_length=MAX_CONCEPTS)]
    n_random: Annotated[int, Field(ge=2, le=100), _INTEGRAL] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1), _INTEGRAL] = 0


class ConceptScoreOut(BaseModel):
    """One concept's TCAV score, test and verdict."""

    name: str
    score: float
    score_std: float
    p_value: float
    p_scores: float
    p_separation: float
    p_corrected: float
    significant: StrictBool
    verdict: str
    cav_accuracy: float
    n_examples: int


class TcavResponse(BaseModel):
    """Scores and tests, the random concepts' figures, and the chart (inline SVG)."""

    layer: str
    target: int
    target_name: str
    n_inputs: int
    inputs_from: str
    concepts: list[ConceptScoreOut]
    random_mean: float
    random_std: float
    control_mean: float
    control_p: float
    n_random: int
    n_random_mode: str
    power: float
    alpha: float
    sentences: list[str]
    chart: str


def _layers(module: nn.Module) -> tuple[list[str], str | None]:
    names = [n for n, _ in module.named_modules() if n]
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.Conv1d)]
    weighted = [n for n, m in module.named_modules()
                if n and any(True for _ in m.parameters(recurse=False))]
    suggested = convs[-1] if convs else (weighted[-2] if len(weighted) > 1 else
                                         (names[0] if names else None))
    return names[:500], suggested


def _module(store: Store, e: Entry) -> nn.Module:
    from ..core.model import Model

    m = store.model(e)
    if isinstance(m, Model):
        m = m.module
    if not isinstance(m, nn.Module):
        raise ApiError(422, f"model {e.name!r} is not a torch module: concepts are read at a layer "
                            "inside the network")
    return m


def _examples(store: Store, e: Entry, c: ConceptIn) -> torch.Tensor:
    if c.samples is not None:
        n = e.n_samples()
        bad = [i for i in c.samples if i >= n]
        if e.samples is None or bad:
            raise ApiError(404, f"model {e.name!r} has {n} samples; index {bad[0] if bad else 0} "
                                f"of concept {c.name!r} is out of range")
        return e.samples[torch.as_tensor(sorted(set(c.samples)))]
    up = store.uploads.get(str(c.upload))
    if up is None or up.model != e.name:
        raise ApiError(404, f"no upload {c.upload!r} for model {e.name!r} (uploads expire)")
    return up.x


def _class_inputs(e: Entry, module: nn.Module, target: int) -> tuple[torch.Tensor, str]:
    if e.samples is None or not e.n_samples():
        raise ApiError(422, f"model {e.name!r} has no samples: start the dashboard with data "
                            "(--data) to have inputs of each class")
    if e.class_names is not None and target >= len(e.class_names):
        raise ApiError(422, f"target {target} is out of range: the model has "
                            f"{len(e.class_names)} classes")
    if e.labels is not None:
        keep = torch.as_tensor(e.labels == target)
        how = "labelled"
    else:
        from ..core.hooks import model_guard

        with model_guard(module), torch.no_grad():
            out = module(e.samples)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ApiError(422, "the model's output is not one row of class scores per input")
        keep = out.argmax(1) == target
        how = "predicted as"
    x = e.samples[keep]
    return x, f"{int(x.shape[0])} samples {how} class {target}"


def concepts_router(store: Store, work: Work | None = None) -> APIRouter:
    """Routes under ``/api`` for the Concepts view (TCAV runs on ``work``'s threads)."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)

    @r.get("/models/{model}/layers", response_model=LayersOut)
    def layers(model: ModelName) -> LayersOut:
        e = store.entry(model)
        names, suggested = _layers(_module(store, e))
        return LayersOut(layers=names, suggested=suggested)

    @r.post("/tcav", response_model=TcavResponse, responses=_BUSY)
    async def run_tcav(req: TcavRequest) -> TcavResponse:
        e = store.entry(req.model)
        names = [c.name for c in req.concepts]
        if len(set(names)) != len(names):
            raise ApiError(422, "two concepts have the same name; name each concept once")
        sets = {c.name: _examples(store, e, c) for c in req.concepts}

        def job() -> tuple[Any, str, list[str]]:
            from ..concepts import tcav
            from ..report.concepts import tcav_sentences

            module = _module(store, e)
            with work.hold(e.name, module):
                x, where = _class_inputs(e, module, req.target)
                pool = e.reference if e.reference is not None else e.samples
                res = tcav(module, sets, x, req.target, req.layer, pool,
                           n_random="auto" if req.n_random is None else req.n_random,
                           seed=req.seed)
            return res, where, tcav_sentences(res)

        res, where, sentences = await work.run(
            job, what="TCAV", advice="Give fewer concepts or a number of random runs.")
        d = res.to_dict()

        return TcavResponse(
            layer=res.layer, target=res.target, target_name=res.target_name, n_inputs=res.n_inputs,
            inputs_from=where,
            concepts=[ConceptScoreOut(name=c, score=d["scores"][i], score_std=d["score_std"][i],
                                      p_value=d["p_values"][i], p_scores=d["p_scores"][i],
                                      p_separation=d["p_separation"][i],
                                      p_corrected=d["p_corrected"][i],
                                      significant=d["significant"][i], verdict=d["verdicts"][i],
                                      cav_accuracy=d["cav_accuracy"][i],
                                      n_examples=d["n_examples"][c])
                      for i, c in enumerate(res.concepts)],
            random_mean=d["random_mean"], random_std=d["random_std"],
            control_mean=d["control_mean"], control_p=d["control_p"], n_random=res.n_random,
            n_random_mode=res.n_random_mode, power=res.power, alpha=res.alpha,
            sentences=sentences, chart=res.to_svg())

    return r
