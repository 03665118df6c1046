"""Request and response bodies of the dashboard's JSON API (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
)
from pydantic.config import JsonDict

__all__ = ["AuditRequest", "AuditResponse", "ColumnOut", "DistillRequest", "DistillResponse",
           "ErrorOut", "ExplainRequest", "ExplainResponse", "MapOut", "MethodOut", "MetricsOut", "ModelOut",
           "PredictionOut", "SampleOut", "SamplesOut", "SanityRequest", "SanityResponse",
           "UploadOut"]



def _integral(value: Any) -> Any:
    """JSON has one kind of number: 3.0 is the integer 3 (as JSON Schema says); 3.5, ``true``
    and ``"3"`` stay what they are and are refused by the strict integer check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_INTEGRAL = BeforeValidator(_integral)  # on an integer in a request body (strict, but 3.0 is 3)
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]
MethodName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
UploadId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
Target = Union[Literal["predicted"], Annotated[int, Field(ge=0, le=100_000), _INTEGRAL]]
OptionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
OptionValue = Union[StrictBool, StrictInt, Annotated[StrictFloat, Field(allow_inf_nan=False)],
                    Annotated[str, Field(max_length=200)], None]
_CLOSED = {"additionalProperties": False}  # keys must match their pattern (JSON schema)
MethodOptions = Annotated[dict[OptionName, OptionValue], Field(max_length=16, json_schema_extra=_CLOSED)]


#: Exactly one of ``sample`` (an index) and ``upload`` (an id), each not null.
_ONE_INPUT: JsonDict = {"oneOf": [
    {"required": ["sample"], "properties": {"sample": {"type": "integer"}}},
    {"required": ["upload"], "properties": {"upload": {"type": "string"}}},
]}


class _Strict(BaseModel):
    """A request body: no unknown keys, no coercion (``true`` is not ``1``, ``"1"`` is not a
    number), no NaN or infinite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ErrorOut(BaseModel):
    """Why a request failed, in one line."""

    detail: str


class ModelOut(BaseModel):
    """A model the dashboard offers."""

    name: str
    description: str
    modality: str | None
    n_samples: int
    class_names: list[str] | None
    feature_names: list[str] | None


class MethodOut(BaseModel):
    """A registered method and whether it applies to the model."""

    name: str
    title: str
    family: str
    summary: str
    applies: bool
    reason: str | None


class SampleOut(BaseModel):
    """One input offered for explanation."""

    index: int
    label: str | None
    thumbnail: Annotated[str | None, Field(description="data: URI of a PNG (images)")] = None
    preview: Annotated[str | None, Field(description="short text (tables, text)")] = None


class SamplesOut(BaseModel):
    """A page of inputs."""

    total: int
    items: list[SampleOut]


class UploadOut(BaseModel):
    """An accepted upload: an id to explain it by, never a path."""

    id: str
    model: str
    kind: str
    rows: int
    shape: list[int]


class ExplainRequest(_Strict):
    """Which model, which input (a sample index or an upload row), which methods and their options."""

    model_config = ConfigDict(json_schema_extra=_ONE_INPUT)

    model: Name
    sample: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    upload: UploadId | None = None
    row: Annotated[int, Field(ge=0, le=10_000), _INTEGRAL] = 0
    methods: Annotated[list[MethodName], Field(min_length=1, max_length=8)]
    target: Target = "predicted"
    evaluate: bool = True
    options: Annotated[dict[MethodName, MethodOptions], Field(
        max_length=8, json_schema_extra=_CLOSED,
        description="options of the methods named in 'methods', by method, as each declares "
                    "them (an undeclared one is refused with 422)")] = {}


class SanityRequest(_Strict):
    """A sanity check of one method on one input."""

    model_config = ConfigDict(json_schema_extra=_ONE_INPUT)

    model: Name
    sample: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    upload: UploadId | None = None
    row: Annotated[int, Field(ge=0, le=10_000), _INTEGRAL] = 0
    method: MethodName


class PredictionOut(BaseModel):
    """What the model said."""

    label: str
    probability: float | None
    target: str
    true_label: str | None
    outside_data: str | None = None  # in words: the input lies outside the model's data


class MapOut(BaseModel):
    """One method's result for the input."""

    method: str
    title: str
    status: str
    note: str | None
    seconds: float
    n_evals: int
    kind: str | None
    image: Annotated[str | None, Field(description="data: URI of the map over the image")] = None
    html: Annotated[str | None, Field(description="escaped HTML: bars or coloured tokens")] = None


class MetricsOut(BaseModel):
    """Figures of one method: quality metrics and agreement with the other methods."""

    method: str
    figures: dict[str, float]
    agreement: float | None
    verdicts: dict[str, bool | None] = Field(default_factory=dict)


class ExplainResponse(BaseModel):
    """Maps, metrics and narrative of one input; ``run`` names the downloads."""

    run: str
    prediction: PredictionOut
    input_image: str | None
    narrative: str
    cautions: list[str]
    maps: list[MapOut]
    metrics: list[MetricsOut]
    agreement: float | None
    metrics_note: str | None


class SanityResponse(BaseModel):
    """Result of the model-randomisation sanity check (Adebayo et al., 2018)."""

    method: str
    available: bool
    passed: bool | None = None
    verdict: str | None = None  # "passed", "failed" or "undefined" (``reason`` says why)
    reason: str | None = None
    threshold: float | None = None
    similarity: float | None = None
    note: str | None = None


class DistillRequest(_Strict):
    """A surrogate of a table model: fitted on the model's answers on the model's rows (or an
    uploaded table), measured on a quarter of them held out."""

    model: Name
    upload: UploadId | None = None
    kind: Literal["rules", "tree", "linear"] = "rules"
    max_depth: Annotated[int, Field(ge=1, le=8), _INTEGRAL] = 3


class RuleOut(BaseModel):
    """One rule with its held-out figures."""

    text: str
    coverage: float
    fidelity: float | None


class CurvePoint(BaseModel):
    """Held-out fidelity of a surrogate of one size."""

    size: int
    complexity: int
    fidelity: float


class DistillResponse(BaseModel):
    """The surrogate, how faithful it is, and the model's global importance per column."""

    kind: str
    n_rows: int
    held_out_rows: int
    complexity: int
    complexity_unit: str
    fidelity: float
    accuracy: float | None
    model_accuracy: float | None
    text: str
    rules: list[RuleOut]
    curve: list[CurvePoint]
    importance: dict[str, float]


class ColumnOut(BaseModel):
    """A column that can serve as a sensitive attribute (2 to 20 distinct values)."""

    name: str
    n_values: int


class AuditRequest(_Strict):
    """A bias audit of a table classifier for one column."""

    model: Name
    upload: UploadId | None = None
    sensitive: Annotated[str, Field(min_length=1, max_length=200)]
    positive: Annotated[int, Field(ge=0, le=100_000), _INTEGRAL] = 1


class AuditResponse(BaseModel):
    """The verdict, plain sentences, flags and outcomes by group; ``page`` names the HTML page."""

    verdict: str
    sentences: list[str]
    flags: list[str]
    selection_rates: dict[str, float]
    demographic_parity_difference: float
    equalized_odds_difference: float | None
    flip_rate: float | None
    page: str
