"""Recourse routes of the what-if view, for table models: the smallest change that flips the
decision (``POST /api/counterfactual``) and a rule that keeps it (``POST /api/anchor``).

Both start from the row the what-if view shows (a sample or an upload row, with the user's
edits applied) in the units of the model's data, so that the changes read as the data's own
values and a coded text column's words. The model's data gives each column's scale, its
allowed values and the neighbours that measure plausibility. Defaults a person expects:
columns the model does not read stay fixed, text columns take the words the data holds, whole
number columns stay whole (those with at most 10 values in the data, a loan term of 12, 24, 36
or 60 months, take one of those), and every column stays within the range the data spans
unless the user gives another range.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from ..report.facts import class_name, probabilities
from ._routes import _BUSY, _ERRORS
from ._schemas import _INTEGRAL, _ONE_INPUT, Name, UploadId, _Strict
from ._schemas_user import CellValue, ColumnName
from ._state import ApiError, Entry, Store
from ._whatif import _table_row, edit_row
from ._work import Work

__all__ = ["AnchorRequest", "AnchorResponse", "CounterfactualRequest", "CounterfactualResponse",
           "recourse_router"]

Number = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
Columns = Annotated[list[ColumnName], Field(max_length=200)]
_ADVICE = "Ask for fewer counterfactuals, or fix more columns."
_NOT_TABLE = "counterfactuals and anchors work on table models"
#: A whole-number column with at most this many values in the data takes only those values.
MAX_LEVELS = 10


class RangeIn(_Strict):
    """Allowed values of a column, inclusive; ``null`` for an open side."""

    low: Number | None = None
    high: Number | None = None


class _RowRequest(_Strict):
    model_config = ConfigDict(json_schema_extra=_ONE_INPUT)

    model: Name
    sample: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    upload: UploadId | None = None
    row: Annotated[int, Field(ge=0, le=10_000), _INTEGRAL] = 0
    values: Annotated[dict[ColumnName, CellValue], Field(
        max_length=200, description="new values of some columns (numbers, or a word of a text "
                                    "column), applied to the row first: the what-if view's edits")] = {}


class CounterfactualRequest(_RowRequest):
    """The smallest changes of a table row that give another decision, within hard constraints."""

    immutable: Columns = []
    increasing: Annotated[Columns, Field(description="columns that may only go up")] = []
    decreasing: Annotated[Columns, Field(description="columns that may only go down")] = []
    ranges: Annotated[dict[ColumnName, RangeIn], Field(
        max_length=200, description="allowed values by column (default: the range of the model's data)")] = {}
    n_counterfactuals: Annotated[int, Field(ge=1, le=5), _INTEGRAL] = 1
    desired: Annotated[int, Field(ge=0, le=100_000), _INTEGRAL] | None = None


class AnchorRequest(_RowRequest):
    """A rule on the row's columns that keeps the model's decision."""

    threshold: Annotated[float, Field(ge=0.5, le=0.99, allow_inf_nan=False)] = 0.9


class ChangeOut(BaseModel):
    """One column a counterfactual changes, in the data's units and words."""

    column: str
    before: str
    after: str


class OptionOut(BaseModel):
    """One counterfactual (or the closest candidate when none is valid)."""

    changes: list[ChangeOut]
    decision: str
    probability: float | None  # the model's probability of ``decision``'s class
    valid: bool
    l0: float | None = None
    l1: float | None = None
    l2: float | None = None
    plausibility: float | None = None  # mean distance to the nearest data rows (column spreads)
    ynn: float | None = None  # share of those rows the model gives the same decision
    violations: int = 0
    recourse: str


class CounterfactualResponse(BaseModel):
    """What would change the decision, in words and as a table; ``result`` is the library's
    ``Counterfactuals.to_dict()``."""

    found: bool
    status: str
    decision: str
    desired: str
    probability: float | None  # the model's probability of ``desired`` now
    recourse: str
    options: list[OptionOut]
    closest: OptionOut | None
    fixed: list[str]  # held because the model does not read them
    categorical: list[str]  # limited to the values the data holds
    integer: list[str]  # whole numbers
    ranges: dict[str, list[float | None]]  # the ranges used
    method: str
    seconds: float
    result: dict[str, Any]


class AnchorResponse(BaseModel):
    """A rule that keeps the decision, with its precision (on samples) and coverage (on the data)."""

    sentence: str
    predicates: list[str]
    features: list[str]
    decision: str
    precision: float
    coverage: float
    threshold: float
    valid: bool
    n_samples: int


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as ``None`` (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _problem(store: Store, e: Entry, req: _RowRequest) -> tuple[np.ndarray, np.ndarray, list[str], Any,
                                                                    dict[str, list[str]], list[str]]:
    """(row, data, column names, preprocess, words of coded columns, columns the model does not
    read) for a request: the row in the units of the model's data, the user's edits applied."""
    if e.modality != "tabular":
        raise ApiError(422, f"model {e.name!r} takes {e.modality or 'unknown'} inputs: {_NOT_TABLE}")
    row, names, from_table = _table_row(store, e, req.sample, req.upload, req.row)
    words = e.categories if from_table else {}
    row, _ = edit_row(row, names, words, dict(req.values))
    try:
        data, _, pre = store.table(e, None)
    except ApiError as exc:
        raise ApiError(422, f"{_NOT_TABLE} with the model's data (column scales, allowed values, "
                            f"neighbours): {exc.message}") from None
    if not from_table:
        pre = None
    if data.shape[1] != row.size:
        raise ApiError(422, f"the row has {row.size} columns, the model's data {data.shape[1]}")
    aside = [n for n in (e.kept_aside or []) if n in names] if from_table else []
    return row, data, names, pre, {k: v for k, v in words.items() if k in names}, aside


def _prob(scores: np.ndarray, k: int) -> float | None:
    p = probabilities(np.asarray(scores, dtype=np.float64).reshape(1, -1))
    return None if p is None or k >= p.shape[1] else float(p[0, k])


def _option(cf: Any, k: int | None) -> OptionOut:
    """Counterfactual ``k`` of the one row of ``cf`` (``None``: its closest candidate)."""
    names, x = cf.feature_names, cf.x[0]
    if k is None:
        row, sc, ok = cf.closest[0], cf.closest_scores[0], False
        cls = int(cf.label[0]) if not np.all(np.isfinite(sc)) else (
            int(np.argmax(sc)) if sc.size > 1 else int(sc[0] > (cf.params.get("threshold") or 0.5)))
    else:
        row, sc, ok = cf.rows[0, k], cf.scores[0, k], True
        cls = int(cf.desired[0])
    changes = [ChangeOut(column=n, before=cf.cell(j, float(x[j])), after=cf.cell(j, float(row[j])))
               for j, n in enumerate(names) if np.isfinite(row[j]) and row[j] != x[j]]
    figs: dict[str, Any] = {}
    if k is not None:
        figs = {m: float(getattr(cf, m)[0, k]) for m in ("l0", "l1", "l2", "plausibility", "ynn")}
        figs["violations"] = int(cf.violations[0, k])
    else:
        figs["violations"] = int(cf.closest_violations[0])
    return OptionOut(changes=changes, decision=class_name(cls, cf.class_names),
                     probability=_prob(sc, cls) if np.all(np.isfinite(sc)) else None, valid=ok,
                     recourse=cf.recourse(0, k or 0), **_finite(figs))


def recourse_router(store: Store, work: Work | None = None) -> APIRouter:
    """Routes under ``/api`` for counterfactuals and anchors of table rows (run on ``work``'s
    threads)."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)

    @r.post("/counterfactual", response_model=CounterfactualResponse, responses=_BUSY)
    async def counterfactual(req: CounterfactualRequest) -> CounterfactualResponse:
        e = store.entry(req.model)
        row, data, names, pre, words, aside = _problem(store, e, req)
        for col in [*req.immutable, *req.increasing, *req.decreasing, *req.ranges]:
            if col not in names:
                raise ApiError(422, f"no column named {col!r}; the columns are {', '.join(names)}")
        both = sorted(set(req.increasing) & set(req.decreasing))
        if both:
            raise ApiError(422, f"column {both[0]!r} cannot be both only-up and only-down; fix it instead")
        if e.class_names and req.desired is not None and req.desired >= len(e.class_names):
            raise ApiError(422, f"desired class {req.desired} is out of range: the model has "
                                f"{len(e.class_names)} classes")
        whole = [n for j, n in enumerate(names) if n not in words
                 and bool(np.all(data[:, j] == np.round(data[:, j])))]
        # whole numbers of a few kinds (a loan term of 12, 24, 36 or 60 months): values the data holds
        few = [n for n in whole if np.unique(data[:, names.index(n)]).size <= MAX_LEVELS]
        # default: within the data's range (widened to the row's own value)
        ranges: dict[str, tuple[float | None, float | None]] = {
            n: (float(min(data[:, j].min(), row[j])), float(max(data[:, j].max(), row[j])))
            for j, n in enumerate(names) if n not in words}
        for col, rg in req.ranges.items():
            if rg.low is not None and rg.high is not None and rg.low > rg.high:
                raise ApiError(422, f"range of {col!r}: low {rg.low} is above high {rg.high}")
            ranges[col] = (None if rg.low is None else float(rg.low), None if rg.high is None else float(rg.high))
        constraints = {"immutable": list(dict.fromkeys([*req.immutable, *aside])),
                       "increasing": list(req.increasing), "decreasing": list(req.decreasing),
                       "ranges": ranges, "integer": whole, "categorical": few}

        def job() -> Any:
            from ..counterfactual import counterfactuals

            m = store.model(e)
            with work.hold(e.name, m):
                return counterfactuals(m, row[None], data=data, desired=req.desired, constraints=constraints,
                                       n_counterfactuals=req.n_counterfactuals, preprocess=pre,
                                       feature_names=names, class_names=e.class_names, value_names=words,
                                       batch_size=64)

        cf = await work.run(job, what="the counterfactual search", advice=_ADVICE)
        found = bool(cf.found[0])
        options = [_option(cf, int(k)) for k in np.flatnonzero(cf.valid[0])]
        desired = int(cf.desired[0])
        store.record(e, f"Counterfactual (dashboard): {cf.recourse(0)}")
        return CounterfactualResponse(
            found=found, status=cf.status(0), decision=class_name(int(cf.label[0]), cf.class_names),
            desired=class_name(desired, cf.class_names), probability=_prob(cf.x_scores[0], desired),
            recourse=cf.recourse(0), options=options, closest=None if found else _option(cf, None),
            fixed=aside, categorical=[*words, *few], integer=whole,
            ranges={k: [v[0], v[1]] for k, v in ranges.items()}, method=cf.method,
            seconds=float(cf.seconds), result=_finite(cf.to_dict()))

    @r.post("/anchor", response_model=AnchorResponse, responses=_BUSY)
    async def anchor_route(req: AnchorRequest) -> AnchorResponse:
        e = store.entry(req.model)
        row, data, names, pre, words, _ = _problem(store, e, req)

        def job() -> Any:
            from ..counterfactual import anchor

            m = store.model(e)
            with work.hold(e.name, m):
                return anchor(m, row, data=data, threshold=req.threshold, feature_names=names,
                              class_names=e.class_names, preprocess=pre, value_names=words, budget=4000,
                              batch_size=256)

        a = await work.run(job, what="the anchor search", advice="Ask for a lower precision.")
        store.record(e, f"Anchor (dashboard): {a.sentence}")
        return AnchorResponse(sentence=a.sentence, predicates=list(a.predicates), features=list(a.features),
                              decision=a.class_name, precision=float(a.precision), coverage=float(a.coverage),
                              threshold=float(a.threshold), valid=bool(a.valid), n_samples=int(a.n_samples))

    return r
