"""Inputs for the front ends: image files, CSV, ``.npy``, text files and ``zoo:NAME`` test
splits, stacked into one batch (:func:`load_inputs`) or read as a table (:func:`load_table`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .arguments import parse_rows
from .loading import LoadedModel
from .wording import PYTHON, Wording

__all__ = ["IMAGE_SUFFIXES", "Inputs", "Table", "load_inputs", "load_table", "read_csv", "read_image",
           "read_npy"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Inputs:
    """A batch read from files, with its names and labels when the source had them."""

    x: torch.Tensor
    feature_names: list[str] | None = None
    labels: np.ndarray | None = None
    tokens: list[list[str]] | None = None
    sources: list[str] = field(default_factory=list)


def read_npy(data: bytes, name: str) -> np.ndarray:
    """An array from ``.npy`` bytes; object arrays (pickles) are refused."""
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{name}: cannot read as a numeric .npy array ({exc}); pickled object "
                         "arrays are never loaded") from exc
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name}: expected a numeric array, got {getattr(a, 'dtype', type(a))}")
    return a


def _is_number(c: str) -> bool:
    try:
        float(c)
    except ValueError:
        return False
    return True


def read_csv(text: str, name: str) -> tuple[np.ndarray, list[str] | None]:
    """Rows of numbers from CSV text; a first row that is not numeric is taken as the header."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{name}: the CSV file has no rows")
    header = None
    if not any(_is_number(c) for c in rows[0]):  # a first row without any number is a header
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise InputError(f"{name}: the CSV file has a header but no data rows")
    width = len(rows[0])
    out = np.empty((len(rows), width), dtype=np.float32)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise InputError(f"{name}: row {i + 1} has {len(r)} columns, expected {width}")
        for j, c in enumerate(r):
            try:
                out[i, j] = float(c)
            except ValueError:
                raise InputError(f"{name}: row {i + 1}, column {j + 1} is not a number: {c!r}") from None
    if header is not None and len(header) != width:
        raise InputError(f"{name}: the header has {len(header)} names for {width} columns")
    return out, header


def read_image(data: bytes, name: str, *, channels: int | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as (C, H, W) float32 in [0, 1], converted to ``channels`` and resized to
    ``size`` (H, W) when given."""
    from ..errors import require

    require("PIL", "viz")
    from PIL import Image, UnidentifiedImageError

    try:
        raw = Image.open(io.BytesIO(data))
        raw.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{name}: not a readable image ({exc})") from exc
    img = raw.convert("L" if channels == 1 else "RGB")
    if size is not None:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _first_conv_channels(model: Any) -> int | None:
    if isinstance(model, nn.Module):
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                return int(m.in_channels)
    return None


def _read_one(path: Path, loaded: LoadedModel, size: tuple[int, int] | None) -> tuple[np.ndarray, list[str] | None]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(2, "no such input file", str(path))
    if suffix == ".npy":
        a = read_npy(path.read_bytes(), path.name)
        if a.ndim == 1 or (loaded.sample_shape is not None and tuple(a.shape) == loaded.sample_shape):
            a = a[None]
        return a, None
    if suffix in (".csv", ".tsv"):
        text = path.read_text(encoding="utf-8")
        if suffix == ".tsv":
            text = text.replace("\t", ",")
        return read_csv(text, path.name)
    if suffix in IMAGE_SUFFIXES:
        shape = loaded.sample_shape
        ch = shape[0] if shape is not None and len(shape) == 3 else _first_conv_channels(loaded.model)
        if size is None and shape is not None and len(shape) == 3:
            size = (shape[1], shape[2])
        return read_image(path.read_bytes(), path.name, channels=ch, size=size)[None], None
    raise InputError(f"{path.name}: unsupported input type {suffix!r}; give image files, .csv, "
                     ".npy, .txt (text, one sample a line) or zoo:NAME")


def _tokenize(texts: list[str], loaded: LoadedModel) -> tuple[torch.Tensor, list[list[str]]]:
    tok = loaded.tokenizer
    if tok is None:
        raise InputError("text inputs need a tokenizer: give a model factory whose result has a "
                         ".tokenizer attribute (a Hugging Face tokenizer)")
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True)
    ids = enc["input_ids"]
    return ids, [list(tok.convert_ids_to_tokens(row.tolist())) for row in ids]


def load_inputs(sources: Sequence[str], loaded: LoadedModel, *, texts: Sequence[str] = (),
                rows: str | None = None, size: tuple[int, int] | None = None,
                wording: Wording = PYTHON) -> Inputs:
    """Read and stack the inputs: ``zoo:NAME`` (its test split), image files, CSV, ``.npy``,
    ``.txt`` files or ``texts``; ``rows`` (``"0:4"`` or ``"1,5,7"``) selects rows.
    ``wording`` names the caller's settings in error messages (the CLI's flags)."""
    w = wording
    arrays: list[np.ndarray] = []
    names: list[str] | None = None
    labels: list[np.ndarray] = []
    all_texts = list(texts)
    for src in sources:
        if src.startswith("zoo:"):
            from ..zoo import load_dataset

            data = load_dataset(src[4:])
            arrays.append(data.X_test.numpy())
            labels.append(data.y_test.numpy())
            names = names or data.feature_names
        elif Path(src).suffix.lower() == ".txt":
            if not Path(src).is_file():
                raise FileNotFoundError(2, "no such input file", src)
            all_texts += [ln.strip() for ln in Path(src).read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            a, header = _read_one(Path(src), loaded, size)
            arrays.append(a)
            names = names or header
    tokens = None
    if all_texts:
        if arrays:
            raise InputError("give either text inputs or numeric inputs, not both")
        ids, tokens = _tokenize(all_texts, loaded)
        arrays.append(ids.numpy())
    if not arrays:
        raise InputError(f"no inputs given; pass {w.give('sources', 'FILE')} (images, .csv, .npy, .txt) "
                         f"or {w.give('sources', 'zoo:NAME')}, or {w.name('texts')}")
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"the inputs have different shapes {sorted(shapes)}; give inputs of "
                         f"one shape (resize images with {w.give('size', 'H,W')})")
    x = np.concatenate(arrays, axis=0)
    lab = np.concatenate(labels) if labels and len(labels) == len(arrays) else None
    idx = parse_rows(rows, x.shape[0], wording=w) if rows else None
    if idx is not None:
        x = x[idx]
        lab = lab[idx] if lab is not None else None
        tokens = [tokens[i] for i in idx] if tokens is not None else None
    return Inputs(torch.from_numpy(np.ascontiguousarray(x)), feature_names=names or loaded.feature_names,
                  labels=lab, tokens=tokens, sources=list(sources))


@dataclass
class Table:
    """Rows of a table for the global tools (surrogates, audits), with names and true labels."""

    X: np.ndarray
    feature_names: list[str] | None
    labels: np.ndarray | None
    preprocess: Callable[[np.ndarray], Any] | None = None  # table units -> model inputs


def load_table(sources: Sequence[str], loaded: LoadedModel, *, rows: str | None = None,
               label_column: str | None = None, wording: Wording = PYTHON) -> Table:
    """Rows for :func:`unveil.distill` or :func:`unveil.bias_audit`.

    Without ``sources``, a zoo model brings every row of its data set (train and test, with
    labels) in the data set's own units, which the zoo's models take. ``label_column`` (a
    header name or a column index) takes the true labels out of a CSV file's columns.
    ``wording`` names the caller's settings in error messages.
    """
    w = wording
    if not sources and loaded.zoo:
        from ..zoo import load_dataset

        data = load_dataset(loaded.zoo)
        X = np.concatenate([data.X_train.numpy(), data.X_test.numpy()]).astype(np.float64)
        zoo_y = np.concatenate([data.y_train.numpy(), data.y_test.numpy()])
        if rows:
            idx = parse_rows(rows, X.shape[0], wording=w)
            X, zoo_y = X[idx], zoo_y[idx]
        return Table(X, data.feature_names or loaded.feature_names, zoo_y)
    if not sources:
        raise InputError(f"no rows given; pass {w.give('sources', 'rows.csv')} (or .npy, or zoo:NAME)")
    inp = load_inputs(sources, loaded, rows=rows, wording=w)
    X, names, y = inp.x.numpy(), inp.feature_names, inp.labels
    if X.ndim != 2:
        raise InputError(f"these tools work on tables (rows, columns); the inputs have shape {tuple(X.shape)}")
    if label_column is not None:
        if names is not None and label_column in names:
            j = names.index(label_column)
        elif label_column.lstrip("-").isdigit() and -X.shape[1] <= int(label_column) < X.shape[1]:
            j = int(label_column) % X.shape[1]
        else:
            known = f"the header names are {names}" if names else "the file has no header"
            raise InputError(f"no label column {label_column!r}; {known} (or give a column index)")
        y = X[:, j].astype(np.int64) if np.all(X[:, j] == np.round(X[:, j])) else X[:, j].copy()
        X = np.delete(X, j, axis=1)
        names = None if names is None else [n for k, n in enumerate(names) if k != j]
    return Table(np.ascontiguousarray(X), names, y)
