"""Which training examples drove this decision: the dashboard's route.

``POST /api/training-data`` takes the input being explained (a sample or an upload's row) and a
method, and answers with the training rows whose weight in training most lowered (proponents)
or raised (opponents) the loss of the model's decision on it — each with its index, label,
score and the row itself (a thumbnail for images, the values for tables) — and the method's
leave-one-out correlation measured on this input (the last layer refit exactly on each of a few
training rows left out), so the figures can be trusted or not.

The training rows are the model's data table with its labels (``unveil serve --data FILE
--label-column NAME``) or, for the zoo's models, their training split.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import torch
from fastapi import APIRouter
from pydantic import BaseModel, Field

from ._data import model_inputs
from ._routes import _BUSY, _ERRORS
from ._schemas import _INTEGRAL, Name, UploadId, _Strict
from ._state import ApiError, Entry, Store
from ._work import Work

__all__ = ["TrainingDataRequest", "TrainingDataResponse", "training_data_router"]

#: Most training rows a request attributes over (a random subset beyond it, said so).
MAX_TRAIN_ROWS = 2000
#: Training rows left out one at a time to measure the leave-one-out correlation.
LOO_ROWS = 20

Method = Literal["auto", "influence", "trak", "tracin", "representer"]
#: Most last-layer parameters for which "auto" picks influence functions (an exact Hessian);
#: beyond it, representer points (no Hessian at all).
AUTO_MAX_PARAMS = 3000
_WORDS = {
    "influence": "influence functions through the last layer (Koh & Liang 2017)",
    "trak": "TRAK, projected gradients of the whole model (Park et al. 2023)",
    "tracin": "TracIn, gradient agreement through the last layer (Pruthi et al. 2020)",
    "representer": "representer points of the last layer (Yeh et al. 2018)",
}


class TrainingDataRequest(_Strict):
    """The input being explained and how to find the training rows behind its decision."""

    model: Name
    sample: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    upload: UploadId | None = None
    row: Annotated[int, Field(ge=0, le=10_000), _INTEGRAL] = 0
    method: Method = "auto"
    k: Annotated[int, Field(ge=1, le=20), _INTEGRAL] = 5
    evaluate: bool = True


class ValueOut(BaseModel):
    """One column of a training row."""

    name: str
    value: float


class TrainingRowOut(BaseModel):
    """A training row and its score for the explained decision."""

    index: int
    label: float
    label_name: str
    score: float
    image: str | None = None  # a PNG data URI for image rows
    values: list[ValueOut] | None = None  # the columns of table rows


class TrainingDataResponse(BaseModel):
    """The strongest proponents and opponents, and how far the scores can be trusted."""

    model: str
    method: str
    method_words: str
    target: int
    target_name: str
    n_train: int
    proponents: list[TrainingRowOut]
    opponents: list[TrainingRowOut]
    evaluation: dict[str, float]
    evaluation_words: str
    seconds: float
    note: str = ""


def _training(e: Entry) -> tuple[torch.Tensor, torch.Tensor, list[str] | None, str]:
    """The entry's training rows (model inputs), labels, column names and a note."""
    from ..zoo import ZOO, load_dataset

    note = ""
    if e.name in ZOO and e.description == ZOO[e.name].description:  # a zoo model: its training split
        data = load_dataset(e.name)
        x, y, names = data.X_train, data.y_train.numpy(), data.feature_names
    elif e.table is not None and e.table_labels is not None:
        x = model_inputs(e.table_preprocess, e.table)
        y = np.asarray(e.table_labels)
        names = e.feature_names if e.feature_names and len(e.feature_names) == x.shape[1] else None
    else:
        raise ApiError(422, f"the dashboard has no labelled training rows for model {e.name!r}; start it "
                            "with unveil serve --data TRAIN.csv --label-column LABEL")
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise ApiError(422, f"model {e.name!r}'s labels are not classes; this view explains classifiers")
    yt = torch.as_tensor(y.astype(np.int64))
    if len(x) > MAX_TRAIN_ROWS:
        keep = torch.from_numpy(np.sort(np.random.default_rng(0).choice(len(x), MAX_TRAIN_ROWS, replace=False)))
        x, yt = x[keep], yt[keep]
        note = f"{MAX_TRAIN_ROWS} of the {len(y)} training rows, drawn at random, are scored."
    return x, yt, names, note


def _thumbnail(row: np.ndarray) -> str | None:
    from ..report.png import data_uri, upscale

    a = np.asarray(row, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    elif a.ndim != 2:
        return None
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return data_uri(upscale(a, 48))


def _words(ev: dict[str, float], skipped: str | None) -> str:
    r = ev.get("loo_correlation")
    if r is None or not np.isfinite(r):
        return f"Not measured{': ' + skipped if skipped else ''}."
    n = int(ev.get("loo_rows", 0))
    how = "closely" if r >= 0.8 else "roughly" if r >= 0.5 else "poorly"
    return (f"Leaving out {n} training rows one at a time (the last layer refit exactly), the scores "
            f"predicted the change of this decision's loss {how}: correlation {r:.2f} (half of the "
            "rows are those with the strongest scores, half drawn at random).")


def training_data_router(store: Store, work: Work | None = None) -> APIRouter:
    """The route ``POST /api/training-data`` (run on ``work``'s threads)."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)

    @r.post("/training-data", response_model=TrainingDataResponse, responses=_BUSY)
    async def training_data(req: TrainingDataRequest) -> TrainingDataResponse:
        from ..frontends.training_data import TrainingRows, influence_for

        e = store.entry(req.model)
        x, _, _ = store.input(e, req.sample, req.upload, req.row)
        if not e.is_module and not isinstance(store.model(e), torch.nn.Module):
            raise ApiError(422, f"model {e.name!r} is not a torch model; training-data attribution needs "
                                "gradients with respect to its parameters")
        xs, ys, names, note = _training(e)
        if tuple(x.shape[1:]) != tuple(xs.shape[1:]):
            raise ApiError(422, f"the input has shape {tuple(x.shape[1:])}, the training rows "
                                f"{tuple(xs.shape[1:])}; explain an input of the kind the model was trained on")

        method = req.method
        if method == "auto":
            from ..data_attribution import choose_parameters

            module = store.model(e)
            last = choose_parameters(module, "last")
            size = sum(p.numel() for n, p in module.named_parameters() if n in last)
            method = "influence" if size <= AUTO_MAX_PARAMS else "representer"

        def job() -> Any:
            m = store.model(e)
            with work.hold(e.name, m):
                return influence_for(m, TrainingRows(xs, ys, names), x.to(xs.dtype), method=method,
                                     evaluate=LOO_ROWS if req.evaluate else 0, class_names=e.class_names)

        res = await work.run(job, what=f"the training rows behind this decision ({method})",
                             advice="Choose the influence method or turn the evaluation off.")
        classes = e.class_names or []
        target = int(res.test_targets[0])

        def name(c: int) -> str:
            return classes[c] if 0 <= c < len(classes) else str(c)

        def out(item: dict[str, Any]) -> TrainingRowOut:
            row = xs[item["position"]].numpy()
            image = _thumbnail(row) if row.ndim >= 2 else None
            values = None
            if row.ndim == 1:
                cols = names or [f"x{j}" for j in range(row.size)]
                values = [ValueOut(name=c, value=float(v)) for c, v in zip(cols, row.tolist())]
            lab = item["label"]
            return TrainingRowOut(index=item["index"], label=float(lab), label_name=name(int(lab)),
                                  score=float(item["score"]), image=image, values=values)

        top = res.top(0, req.k)
        ev = {k: float(v) for k, v in res.evaluation.items() if isinstance(v, (int, float)) and np.isfinite(v)}
        return TrainingDataResponse(
            model=e.name, method=method, method_words=_WORDS[method], target=target,
            target_name=name(target), n_train=int(len(xs)),
            proponents=[out(i) for i in top["proponents"]], opponents=[out(i) for i in top["opponents"]],
            evaluation=ev, evaluation_words=_words(ev, res.params.get("loo_skipped")), seconds=float(sum(res.timings.values())), note=note)

    return r
