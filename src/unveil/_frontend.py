"""Loading for the front ends (CLI and dashboard): models from ``zoo:NAME`` or an import path,
weights from safetensors, and inputs from files. Pickle is refused unless asked for."""

from __future__ import annotations

import csv
import importlib
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .core.options import OptionSet
from .errors import InputError, ModelError, TargetError

__all__ = ["Inputs", "LoadedModel", "Table", "load_inputs", "load_model", "load_table", "parse_option",
           "parse_rows", "parse_target", "read_csv", "read_image", "read_npy", "zoo_names"]

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".joblib", ".bin", ".ckpt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class LoadedModel:
    """A model and what is known about it (names, modality, the zoo data it came with)."""

    model: Any
    name: str
    description: str = ""
    modality: str | None = None
    sample_shape: tuple[int, ...] | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    zoo: str | None = None
    tokenizer: Any = None


@dataclass
class Inputs:
    """A batch read from files, with its names and labels when the source had them."""

    x: torch.Tensor
    feature_names: list[str] | None = None
    labels: np.ndarray | None = None
    tokens: list[list[str]] | None = None
    sources: list[str] = field(default_factory=list)


def zoo_names() -> list[str]:
    """The names of the zoo models."""
    from .zoo import ZOO

    return sorted(ZOO)


def _zoo_model(name: str) -> LoadedModel:
    from .zoo import ZOO, load_dataset

    if name not in ZOO:
        raise ModelError(f"no zoo model named {name!r}; the zoo has: {', '.join(sorted(ZOO))}")
    entry = ZOO[name]
    data = load_dataset(name)
    return LoadedModel(entry.factory(), name=f"zoo:{name}", description=entry.description,
                       modality=entry.modality, sample_shape=tuple(data.X_test.shape[1:]),
                       class_names=list(data.class_names), feature_names=data.feature_names,
                       zoo=name)


def _import_object(spec: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"model {spec!r} is not 'package.module:factory' nor 'zoo:NAME'")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the working directory import
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"cannot import module {mod_name!r} for model {spec!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"module {mod_name!r} has no attribute {attr!r} (model {spec!r})")
        obj = getattr(obj, part)
    return obj


def _load_pickled(path: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise ModelError(
            f"{path} is a pickle-based file, and loading it can run arbitrary code; pass "
            "--allow-pickle if you trust it, or give --model package.module:factory "
            "--weights FILE.safetensors"
        )
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    if path.suffix in (".pkl", ".pickle"):
        import pickle

        with open(path, "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - the user asked for it with --allow-pickle
    return torch.load(path, map_location="cpu", weights_only=False)


def _load_weights(model: Any, weights: str, allow_pickle: bool) -> None:
    path = Path(weights)
    if not isinstance(model, nn.Module):
        raise ModelError(f"--weights needs a torch.nn.Module, but the model is {type(model).__name__}")
    if not path.is_file():
        raise FileNotFoundError(2, "no such weights file", str(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    elif path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelError(f"{path} is a pickle-based file; pass --allow-pickle if you trust "
                             "it, or convert it to .safetensors")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ModelError(f"weights must be a .safetensors file, got {path.name!r}")
    missing, unexpected = _state_mismatch(model, state)
    if missing or unexpected:
        raise ModelError(
            f"the weights in {path.name} do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; check that the factory builds the same architecture"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"cannot load {path.name}: {str(exc).splitlines()[0]}") from exc


def _state_mismatch(model: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


def load_model(spec: str, *, weights: str | None = None, allow_pickle: bool = False) -> LoadedModel:
    """Resolve ``zoo:NAME``, ``package.module:factory`` or a pickled file (``--allow-pickle``).

    A factory (function or class) is called without arguments; an object is used as it is.
    """
    path = Path(spec)
    if spec.startswith("zoo:"):
        loaded = _zoo_model(spec[4:])
    elif path.suffix == ".safetensors":
        raise ModelError(f"{spec} holds weights only; pass --model package.module:factory "
                         f"--weights {spec}")
    elif path.suffix in PICKLE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(2, "no such model file", spec)
        obj = _load_pickled(path, allow_pickle)
        if isinstance(obj, dict):
            raise ModelError(f"{spec} holds a state dict, not a model; pass --model "
                             "package.module:factory --weights FILE")
        loaded = LoadedModel(obj, name=path.name)
    else:
        obj = _import_object(spec)
        if isinstance(obj, type) or (callable(obj) and not isinstance(obj, nn.Module)
                                     and not hasattr(obj, "predict")):
            try:
                obj = obj()
            except TypeError as exc:
                raise ModelError(f"calling the factory {spec!r} without arguments failed: {exc}") from exc
        loaded = LoadedModel(obj, name=spec, tokenizer=getattr(obj, "tokenizer", None))
    if weights is not None:
        _load_weights(loaded.model, weights, allow_pickle)
    if not callable(loaded.model) and not hasattr(loaded.model, "predict"):
        raise ModelError(f"model {spec!r} resolved to a {type(loaded.model).__name__}, which is "
                         "not callable")
    return loaded


# -- inputs -------------------------------------------------------------------------------
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
    from .errors import require

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
                rows: str | None = None, size: tuple[int, int] | None = None) -> Inputs:
    """Read and stack the inputs: ``zoo:NAME`` (its test split), image files, CSV, ``.npy``,
    ``.txt`` files or ``texts``; ``rows`` (``"0:4"`` or ``"1,5,7"``) selects rows."""
    arrays: list[np.ndarray] = []
    names: list[str] | None = None
    labels: list[np.ndarray] = []
    all_texts = list(texts)
    for src in sources:
        if src.startswith("zoo:"):
            from .zoo import load_dataset

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
        raise InputError("no inputs given; pass --input FILE (images, .csv, .npy, .txt) or "
                         "--input zoo:NAME, or --text")
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"the inputs have different shapes {sorted(shapes)}; give inputs of "
                         "one shape (resize images with --size H,W)")
    x = np.concatenate(arrays, axis=0)
    lab = np.concatenate(labels) if labels and len(labels) == len(arrays) else None
    idx = parse_rows(rows, x.shape[0]) if rows else None
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
               label_column: str | None = None) -> Table:
    """Rows for :func:`unveil.distill` or :func:`unveil.bias_audit`.

    Without ``sources``, a zoo model brings every row of its data set (train and test, with
    labels) in the data set's own units, with the standardisation the model needs as
    ``preprocess``. ``label_column`` (a header name or a column index) takes the true labels
    out of a CSV file's columns.
    """
    if not sources and loaded.zoo:
        from .zoo import load_dataset

        data = load_dataset(loaded.zoo)
        X = data.raw(np.concatenate([data.X_train.numpy(), data.X_test.numpy()]))
        zoo_y = np.concatenate([data.y_train.numpy(), data.y_test.numpy()])
        if rows:
            idx = parse_rows(rows, X.shape[0])
            X, zoo_y = X[idx], zoo_y[idx]
        return Table(X, data.feature_names or loaded.feature_names, zoo_y, data.preprocess)
    if not sources:
        raise InputError("no rows given; pass --input rows.csv (or .npy, or zoo:NAME)")
    inp = load_inputs(sources, loaded, rows=rows)
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


def parse_rows(spec: str, n: int) -> list[int]:
    """``"a:b"`` (a slice) or ``"i,j,k"`` -> row indices, checked against ``n`` rows."""
    try:
        if ":" in spec:
            a, _, b = spec.partition(":")
            idx = list(range(n))[slice(int(a) if a else None, int(b) if b else None)]
        else:
            idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--rows must look like '0:8' or '1,4,9', got {spec!r}") from None
    bad = [i for i in idx if not -n <= i < n]
    if bad or not idx:
        raise InputError(f"--rows {spec!r} selects no rows or rows out of range (there are {n})")
    return idx


def parse_target(spec: str | None, class_names: Sequence[str] | None) -> Any:
    """``predicted`` (default), an int, a class name, or comma-separated ints (one per row)."""
    if spec is None or spec == "predicted":
        return "predicted"
    if spec == "none":
        return None
    try:
        parts = [int(s) for s in spec.split(",")]
        return parts[0] if len(parts) == 1 else parts
    except ValueError:
        pass
    if class_names is not None and spec in class_names:
        return list(class_names).index(spec)
    known = f"; class names: {', '.join(class_names)}" if class_names else ""
    raise TargetError(f"--target must be 'predicted', an int or a class name, got {spec!r}{known}")


def parse_option(items: Sequence[str], declared: OptionSet | None = None) -> dict[str, Any]:
    """``name=value`` pairs. With ``declared`` (a method's options), each value is read by the
    type its option declares (see :mod:`unveil._option_text`); values of undeclared options,
    or without ``declared``, are read as JSON when they parse and kept as text otherwise."""
    from ._option_text import read_option, split_item

    out: dict[str, Any] = {}
    for item in items:
        _, key, text = split_item(item)
        opt = declared.by_name.get(key) if declared is not None else None
        out[key] = read_option(text, [opt] if opt is not None else [])
    return out
