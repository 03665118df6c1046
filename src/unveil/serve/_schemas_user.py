"""Request and response bodies of the dashboard's routes for the user's own model and data:
the editable input of a sample, what-if edits, audit candidates, and the words for terms."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from ._schemas import (
    _INTEGRAL,
    _ONE_INPUT,
    ExplainResponse,
    MethodName,
    MethodOptions,
    Name,
    PredictionOut,
    Target,
    UploadId,
    _Strict,
)

__all__ = ["CandidateOut", "CellOut", "ImageEdit", "InputOut", "TermOut", "TextEdit", "ValuesEdit",
           "WhatIfRequest", "WhatIfResponse"]

ColumnName = Annotated[str, Field(min_length=1, max_length=200)]
#: A cell's new value: a finite number, or a word of a text column (NaN and infinities are refused).
CellValue = Union[StrictInt, Annotated[StrictFloat, Field(allow_inf_nan=False)],
                  Annotated[str, Field(max_length=200)]]
#: Pixel indices of a what-if rectangle: its first row or column, and its end (excluded; the
#: route clips it to the image). A rectangle that ends before it starts, or lies outside the
#: image, is refused with 422.
Pixel = Annotated[int, Field(ge=0, le=10_000), _INTEGRAL]
PixelEnd = Annotated[int, Field(ge=1, le=10_000), _INTEGRAL]


class CandidateOut(BaseModel):
    """A column that can serve as a sensitive attribute (2 to 20 distinct values)."""

    name: str
    n_values: int
    kept_aside: bool = False  # a column of the data the model does not read
    values: list[str] | None = None  # the words of a text column, in code order


class CellOut(BaseModel):
    """One column of an editable table row."""

    name: str
    value: float
    choices: list[str] | None = None  # a text column: its words (``value`` is the index)
    used: bool = True  # False: the model does not read this column


class InputOut(BaseModel):
    """A sample as the user edits it: table cells, the text, or the image's size."""

    kind: Literal["table", "image", "text", "other"]
    cells: list[CellOut] = []
    text: str | None = None
    height: int | None = None
    width: int | None = None


class ValuesEdit(_Strict):
    """New values of some columns of a table row (numbers, or a word of a text column)."""

    kind: Literal["values"]
    values: Annotated[dict[ColumnName, CellValue], Field(min_length=1, max_length=200)]


class ImageEdit(_Strict):
    """Paint a rectangle of the image (pixel rows ``top``..``bottom``, columns ``left``..``right``
    of the model's input, end excluded) with the data's mean image, zeros, or a blur of itself."""

    kind: Literal["rect"]
    top: Pixel
    left: Pixel
    bottom: PixelEnd
    right: PixelEnd
    fill: Literal["mean", "zero", "blur"] = "mean"


class TextEdit(_Strict):
    """The text, rewritten."""

    kind: Literal["text"]
    text: Annotated[str, Field(min_length=1, max_length=2000)]


class WhatIfRequest(_Strict):
    """Edit an input (a sample or an upload row) and explain the edited one."""

    model_config = ConfigDict(json_schema_extra=_ONE_INPUT)

    model: Name
    sample: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    upload: UploadId | None = None
    row: Annotated[int, Field(ge=0, le=10_000), _INTEGRAL] = 0
    edit: Annotated[Union[ValuesEdit, ImageEdit, TextEdit], Field(discriminator="kind")]
    methods: Annotated[list[MethodName], Field(min_length=1, max_length=8)]
    target: Target = "predicted"
    evaluate: bool = False
    options: Annotated[dict[MethodName, MethodOptions], Field(
        max_length=8, json_schema_extra={"additionalProperties": False},
        description="options of the methods named in 'methods', by method, as each declares "
                    "them (an undeclared one is refused with 422)")] = {}


class WhatIfResponse(BaseModel):
    """The prediction before the edit, the edit in words, and the edited input explained."""

    before: PredictionOut
    changes: list[str]
    result: ExplainResponse


class TermOut(BaseModel):
    """A technical term as people read it, and its meaning."""

    label: str
    definition: str | None = None
