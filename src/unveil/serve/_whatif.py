"""What-if routes: edit an input (a table row's values, a rectangle of an image, a sentence) and
see the model's answer and the explanation of the edited input; the words for the metric names
the page shows; and one report of everything the session computed."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from ..report import Report, Section, build_section, skip_not_applicable
from ..report.facts import class_name, probabilities
from ._data import model_inputs
from ._routes import _ADVICE, _BUSY, _ERRORS, ModelName, _response, check_methods
from ._schemas import PredictionOut
from ._schemas_user import (
    CellOut,
    ImageEdit,
    InputOut,
    TermOut,
    TextEdit,
    ValuesEdit,
    WhatIfRequest,
    WhatIfResponse,
)
from ._state import ApiError, Entry, Store
from ._work import Work

__all__ = ["edit_image", "edit_row", "terms", "whatif_router"]

SampleQuery = Annotated[int | None, Query(
    ge=0, le=1_000_000, description="a sample's index (sample 0 when neither this nor 'upload' is given)")]
UploadQuery = Annotated[str | None, Query(
    pattern=r"^[0-9a-f]{16}$", description="an upload's id (give 'sample' or 'upload', not both)")]
RowQuery = Annotated[int, Query(ge=0, le=10_000, description="the row of the upload")]
#: What the what-if edits work on, by the kind of input.
_EDITABLE = "what-if edits work on table rows (values), images (a rectangle) and texts (text)"

#: Figures the page shows that the report's glossary does not define.
_EXTRA_TERMS = {
    "faithful": ("faithful", "Whether removing the features the map ranks first lowers the score "
                             "faster than removing them in a random order."),
    "sanity": ("passes the sanity check", None),
    "completeness": ("completeness gap", None),
    "sparseness": ("sparseness", "How concentrated the map is on few features (Gini index, 0 to 1)."),
    "complexity": ("complexity", "How spread out the map is over the features (entropy)."),
    "max_sensitivity": ("max sensitivity", "The largest change of the map under small changes of the input."),
    "in_distribution": ("inside the model's data", None),
}


def terms() -> dict[str, TermOut]:
    """Every term the page may show, as people read it (the report's glossary first)."""
    from ..report.glossary import TERMS

    out = {k: TermOut(label=v[0], definition=v[1]) for k, v in _EXTRA_TERMS.items()}
    out.update({k: TermOut(label=w, definition=d) for k, (w, d) in TERMS.items()})
    out["sanity"] = TermOut(label="passes the sanity check", definition=TERMS["sanity_check"][1])
    return out


def _table_row(store: Store, e: Entry, sample: int | None, upload: str | None, row: int
               ) -> tuple[np.ndarray, list[str], bool]:
    """The row in the table's units, its column names, and whether it comes from the table
    (``True``) or is the model's input itself."""
    x, _, _ = store.input(e, sample, upload, row)
    if sample is not None and e.sample_rows is not None:
        r = np.asarray(e.sample_rows[sample], dtype=np.float64)
        return r.copy(), e.columns(r.size), True
    up = None if upload is None else store.uploads.get(upload)
    if up is not None and up.rows is not None and e.table_names is not None:
        r = np.asarray(up.rows[row], dtype=np.float64)
        return r.copy(), e.columns(r.size), True
    if e.table_preprocess is not None:
        raise ApiError(422, f"model {e.name!r} takes its rows through a preprocess function; what-if "
                            "edits start from one of its samples or from an uploaded table")
    flat = x[0].numpy().astype(np.float64).reshape(-1)
    names = e.feature_names if e.feature_names and len(e.feature_names) == flat.size else [
        f"x{j}" for j in range(flat.size)]
    return flat.copy(), list(names), False


def edit_row(row: np.ndarray, names: list[str], categories: dict[str, list[str]],
             values: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """``row`` with ``values`` set (numbers, or a word of a coded column), and the changes in
    words; an unknown column or word, or a number that is not finite, is a 422."""
    out = row.copy()
    changes = []
    for col, v in values.items():
        if col not in names:
            raise ApiError(422, f"no column named {col!r}; the columns are {', '.join(names)}")
        j = names.index(col)
        words = categories.get(col)
        old = words[int(out[j])] if words and 0 <= out[j] < len(words) else f"{out[j]:.4g}"
        if words is not None:
            if isinstance(v, str) and v in words:
                code = float(words.index(v))
            elif (isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                  and 0 <= v < len(words)):  # a code (JSON's 1.0 is 1)
                code = float(v)
            else:
                raise ApiError(422, f"column {col!r} takes one of {', '.join(words)}; got {v!r}")
            out[j], new = code, words[int(code)]
        else:
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ApiError(422, f"column {col!r} takes a number; got {v!r}") from None
            if not np.isfinite(f):
                raise ApiError(422, f"column {col!r} takes a finite number; got {v!r}")
            out[j], new = f, f"{f:.4g}"
        if old != new:
            changes.append(f"{col}: {old} → {new}")
    return out, changes


def edit_image(x: torch.Tensor, edit: ImageEdit, reference: torch.Tensor | None) -> tuple[torch.Tensor, str]:
    """The image batch ``x`` (1, C, H, W) with the rectangle painted, and the edit in words."""
    if x.ndim != 4:
        raise ApiError(422, f"painting a rectangle needs an image (1, C, H, W); the input has shape {tuple(x.shape)}")
    h, w = int(x.shape[2]), int(x.shape[3])
    top, left, bottom, right = edit.top, edit.left, min(edit.bottom, h), min(edit.right, w)
    if not (top < bottom and left < right):
        raise ApiError(422, f"the rectangle rows {edit.top}..{edit.bottom}, columns {edit.left}.."
                            f"{edit.right} is empty or outside the {h}x{w} image")
    out = x.clone()
    if edit.fill == "zero":
        fill = torch.zeros_like(x)
        what = "zeros"
    elif edit.fill == "blur":
        k = max(3, (min(h, w) // 8) | 1)
        fill = torch.nn.functional.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
        what = "a blur of the image"
    elif reference is not None and tuple(reference.shape[1:]) == tuple(x.shape[1:]):
        fill = reference.float().mean(0, keepdim=True).to(x.dtype)
        what = "the mean image of the model's data"
    else:
        fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        what = "the image's mean colour"
    out[:, :, top:bottom, left:right] = fill[:, :, top:bottom, left:right]
    return out, f"rows {top}–{bottom - 1}, columns {left}–{right - 1} painted with {what}"


def _prediction(model: Any, x: torch.Tensor, names: list[str] | None) -> PredictionOut:
    from ..core.model import as_model

    m = as_model(model)
    with m.guard(), torch.no_grad():
        s = np.asarray(m.forward(m.prepare(x)).detach().cpu().numpy(), dtype=np.float64)
    p = probabilities(s)
    if p is None:
        score = float(np.ravel(s[0])[0])
        return PredictionOut(label=f"score {score:.3g}", probability=None, target="the score", true_label=None)
    k = int(np.argmax(p[0]))
    return PredictionOut(label=class_name(k, names), probability=float(p[0, k]),
                         target=class_name(k, names), true_label=None)


def whatif_router(store: Store, work: Work | None = None) -> APIRouter:
    """Routes under ``/api`` for what-if edits, terms and the session's report (the edited
    input is explained on ``work``'s threads)."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)

    @r.get("/terms", response_model=dict[str, TermOut])
    def glossary() -> dict[str, TermOut]:
        return terms()

    @r.get("/models/{model}/input", response_model=InputOut)
    def editable(model: ModelName, sample: SampleQuery = None, upload: UploadQuery = None,
                 row: RowQuery = 0) -> InputOut:
        e = store.entry(model)
        if sample is None and upload is None:
            sample = 0
        x, _, toks = store.input(e, sample, upload, row)
        if e.modality == "tabular" and x.ndim == 2:
            vals, names, from_table = _table_row(store, e, sample, upload, row)
            aside = set(e.kept_aside or []) if from_table else set()
            return InputOut(kind="table", cells=[
                CellOut(name=n, value=float(v), choices=e.categories.get(n) if from_table else None,
                        used=n not in aside) for n, v in zip(names, vals)])
        if e.modality == "image" and x.ndim == 4:
            return InputOut(kind="image", height=int(x.shape[2]), width=int(x.shape[3]))
        if e.modality == "text":
            if sample is not None and e.texts is not None:
                return InputOut(kind="text", text=e.texts[sample])
            tk = toks[0] if toks else (e.tokens[sample] if e.tokens and sample is not None else None)
            text = None if tk is None else " ".join(t for t in tk if not (t.startswith("[") and t.endswith("]")))
            return InputOut(kind="text", text=text)
        return InputOut(kind="other")

    @r.post("/whatif", response_model=WhatIfResponse, responses=_BUSY)
    async def whatif(req: WhatIfRequest) -> WhatIfResponse:
        e = store.entry(req.model)
        x, _, tokens = store.input(e, req.sample, req.upload, req.row)
        check_methods(req.methods, req.options, store.budget)
        if isinstance(req.target, int) and e.class_names and req.target >= len(e.class_names):
            raise ApiError(422, f"target {req.target} is out of range: the model has "
                                f"{len(e.class_names)} classes")
        edit = req.edit
        if isinstance(edit, ValuesEdit):
            if e.modality != "tabular":
                raise ApiError(422, f"model {e.name!r} takes {e.modality or 'unknown'} inputs, not table "
                                    f"rows: {_EDITABLE}")
            row, names, from_table = _table_row(store, e, req.sample, req.upload, req.row)
            new, changes = edit_row(row, names, e.categories if from_table else {}, dict(edit.values))
            if from_table:
                x_new = model_inputs(e.table_preprocess, new[None]).to(x.dtype)
            else:
                x_new = torch.from_numpy(new).reshape(x.shape).to(x.dtype)
        elif isinstance(edit, ImageEdit):
            if e.modality != "image" or x.ndim != 4:
                raise ApiError(422, f"model {e.name!r} takes {e.modality or 'unknown'} inputs of shape "
                                    f"{tuple(x.shape[1:])}, not images: {_EDITABLE}")
            x_new, change = edit_image(x, edit, e.reference)
            changes = [change]
        else:
            assert isinstance(edit, TextEdit)
            if e.modality != "text":
                raise ApiError(422, f"model {e.name!r} takes {e.modality or 'unknown'} inputs, not "
                                    f"texts: {_EDITABLE}")
            if e.tokenizer is None:
                raise ApiError(422, f"model {e.name!r} has no tokenizer: editing text needs one "
                                    "(unveil serve --tokenizer)")
            enc = e.tokenizer([edit.text], return_tensors="pt", padding=True, truncation=True)
            x_new = enc["input_ids"]
            tokens = [list(map(str, e.tokenizer.convert_ids_to_tokens(x_new[0].tolist())))]
            changes = [f"text: {edit.text!r}"]

        def job() -> tuple[PredictionOut, Section, str]:
            model = store.explainable(e)
            with work.hold(e.name, model):
                before = _prediction(model, x, e.class_names)
                section = build_section(
                    model, x_new, list(dict.fromkeys(req.methods)), target=req.target,
                    options={k: dict(v) for k, v in req.options.items()}, budget=store.budget,
                    class_names=e.class_names, feature_names=e.feature_names, tokens=tokens,
                    model_name=e.name,
                    description=f"{e.description} · what-if: {'; '.join(changes) or 'no change'}",
                    evaluate=req.evaluate, on_error="record",
                    retry_options={} if e.background is None else {"background": e.background})
            skip_not_applicable(section.runs)
            run_id = store.add_run(Report([section], title=f"unveil · {e.name} · what-if"))
            return before, section, run_id

        before, section, run_id = await work.run(job, what=f"the what-if with {', '.join(req.methods)}",
                                                 advice=_ADVICE)
        return WhatIfResponse(before=before, changes=changes or ["no change"], result=_response(section, run_id))

    @r.get("/session/report", response_class=HTMLResponse)
    def session_report() -> HTMLResponse:
        rep = store.session_report()
        return HTMLResponse(rep.html, headers={
            "Content-Disposition": 'attachment; filename="unveil-session-report.html"'})

    return r
