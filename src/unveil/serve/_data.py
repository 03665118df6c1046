"""A user's model with its data, for the dashboard: rows to pick samples from, rows for the
whole-model views (surrogates, audits), how table rows become model inputs (``preprocess=``, the
convention of :func:`unveil.distill` and :func:`unveil.bias_audit`), and which columns the model
does not read (kept aside: candidate sensitive columns for an audit).

No FastAPI here: :class:`ServedModel` is what ``create_app(models={...})`` accepts besides a
model or a :class:`~unveil.frontends.LoadedModel`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ModelError
from ..frontends import LoadedModel
from ..frontends.lm import CAUSAL_LM, is_causal_lm
from ..frontends.tables import DataTable, encode_cells, read_data_file, split_names, take_labels
from ..frontends.wording import PYTHON, Wording

__all__ = ["ServedModel", "first_layer_modality", "has_spatial_layers", "model_inputs", "used_columns"]

#: Rows of the data kept as background for the methods that ask for one.
N_BACKGROUND = 32


@dataclass
class ServedModel:
    """A model for the dashboard with its data.

    ``data``: a table (a ``.csv``/``.tsv``/``.npy``/``.parquet`` path, an array or a pandas
    DataFrame; text categories allowed) or texts (a ``.txt`` path, one text a line, or a list of
    strings) for a model with a ``tokenizer``. ``preprocess``: a function of the table's rows
    (N, F) float64, text columns coded ``0, 1, …`` in the order of its ``categories[column]``
    (else sorted) -> the model's inputs; without it the model takes the columns named by
    ``feature_names`` (the others are kept aside), or all of them. ``feature_names`` name the
    model's inputs; ``label_column`` takes true labels out of the table.
    """

    model: Any
    data: Any = None
    feature_names: Sequence[str] | str | None = None
    class_names: Sequence[str] | str | None = None
    label_column: str | int | None = None
    preprocess: Callable[[np.ndarray], Any] | None = None
    tokenizer: Any = None
    description: str | None = None

    def prepared(self, name: str, wording: Wording = PYTHON) -> Prepared:
        """The data read and the model's inputs worked out (once; later calls reuse it). Raises
        :class:`~unveil.errors.InputError` or :class:`~unveil.errors.ModelError` saying which
        setting to change; ``wording`` names the settings (the CLI's flags)."""
        cached = self.__dict__.get("_prepared")
        if cached is None:
            cached = prepare(name, self, wording)
            self.__dict__["_prepared"] = cached
        return cached


def _modules(model: Any) -> list[nn.Module]:
    return list(model.modules()) if isinstance(model, nn.Module) else []


def has_spatial_layers(model: Any) -> bool | None:
    """Whether a torch model has a layer laid out over the input's space (a convolution, or
    attention over patch tokens) — what a CAM needs. ``None``: not a torch module."""
    if not isinstance(model, nn.Module):
        return None
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
    return any(isinstance(m, conv) or isinstance(m, nn.MultiheadAttention)
               or "attention" in type(m).__name__.lower() for m in model.modules())


def first_layer_modality(model: Any) -> tuple[str | None, tuple[int, ...] | None]:
    """The kind of input a torch model's first layer with weights takes, and its shape when
    known: a ``Linear`` takes table rows ``(in_features,)``, an ``Embedding`` token ids, a
    ``Conv2d`` images, a ``Conv1d`` signals. A causal language model (a module with a
    next-token head) is ``"causal_lm"``: the dashboard explains what it generates."""
    if is_causal_lm(model):
        return CAUSAL_LM, None
    for m in _modules(model):
        if isinstance(m, nn.Linear):
            return "tabular", (int(m.in_features),)
        if isinstance(m, nn.Embedding):
            return "text", None
        if isinstance(m, nn.Conv2d):
            return "image", None
        if isinstance(m, nn.Conv1d):
            return "sequence", None
    return None, None


def used_columns(preprocess: Callable[[np.ndarray], Any], X: np.ndarray) -> list[bool]:
    """Which columns of ``X`` ``preprocess`` reads: a column whose change (every value plus
    one) leaves the output the same is not read. A preprocess that fails on the changed rows
    reads the column."""
    from ..surrogate.blackbox import model_rows

    rows = X[: min(64, X.shape[0])]
    base = model_rows(rows, preprocess)
    out = []
    for j in range(rows.shape[1]):
        moved = rows.copy()
        moved[:, j] += 1.0
        try:
            other = model_rows(moved, preprocess)
        except Exception:
            out.append(True)
            continue
        out.append(other.shape != base.shape or not np.array_equal(other, base))
    return out


def model_inputs(preprocess: Callable[[np.ndarray], Any] | None, X: np.ndarray) -> torch.Tensor:
    """``preprocess(X)`` (or ``X``) as a float32 tensor, the model's inputs."""
    from ..surrogate.blackbox import model_rows

    a = model_rows(np.asarray(X, dtype=np.float64), preprocess)
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32)


class _Columns:
    """Select columns of the table's rows by index (the model's inputs, the others kept aside)."""

    def __init__(self, index: list[int]) -> None:
        self.index = index

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows)[:, self.index]


def _output_names(preprocess: Any, n: int) -> list[str] | None:
    names = getattr(preprocess, "feature_names", None)
    if names is None and hasattr(preprocess, "get_feature_names_out"):
        try:
            names = list(preprocess.get_feature_names_out())
        except Exception:
            names = None
    return [str(s) for s in names] if names is not None and len(names) == n else None


@dataclass
class Prepared:
    """What :class:`ServedModel` gives an entry of the dashboard."""

    loaded: LoadedModel
    modality: str | None
    sample_shape: tuple[int, ...] | None
    feature_names: list[str] | None
    class_names: list[str] | None
    samples: torch.Tensor | None = None
    labels: np.ndarray | None = None
    table: DataTable | None = None
    preprocess: Callable[[np.ndarray], Any] | None = None
    kept_aside: list[str] | None = None
    texts: list[str] | None = None
    tokens: list[list[str]] | None = None


def _as_table(data: Any, s: ServedModel, known: Any, w: Wording) -> DataTable:
    label = None if s.label_column is None else str(s.label_column)
    cls = split_names(s.class_names) if isinstance(s.class_names, str) else s.class_names
    if isinstance(data, (str, Path)):
        return read_data_file(data, label_column=label, names=split_names(s.feature_names) if isinstance(
            s.feature_names, str) else s.feature_names, class_names=cls, known=known, wording=w)
    cols = getattr(data, "columns", None)
    if cols is not None:  # a DataFrame
        header = [str(c) for c in cols]
        cells = data.astype(object).values.tolist()
    else:
        a = np.asarray(data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data)
        if a.ndim != 2:
            raise InputError(f"data must be a table (rows, columns), got shape {a.shape}")
        header, cells = None, a.tolist()
    t = encode_cells(header, cells, "the data", known=known)
    if label is not None:
        t = take_labels(t, label, "the data", w, cls)
    return t


def _tokenize(texts: list[str], tokenizer: Any) -> tuple[torch.Tensor, list[list[str]]]:
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
    ids = enc["input_ids"]
    return ids, [list(map(str, tokenizer.convert_ids_to_tokens(r.tolist()))) for r in ids]


def prepare(name: str, s: ServedModel, wording: Wording = PYTHON) -> Prepared:
    """Read ``s.data`` and work out the model's inputs; errors say which setting to change."""
    w = wording
    lm = s.model if isinstance(s.model, LoadedModel) else LoadedModel(s.model, name=name)
    tokenizer = s.tokenizer if s.tokenizer is not None else lm.tokenizer
    lm.tokenizer = tokenizer
    class_names = split_names(s.class_names) if isinstance(s.class_names, str) else (
        list(s.class_names) if s.class_names is not None else lm.class_names)
    names = split_names(s.feature_names) if isinstance(s.feature_names, str) else (
        list(s.feature_names) if s.feature_names is not None else None)
    guess, width = first_layer_modality(lm.model)
    modality = lm.modality or guess
    p = Prepared(lm, modality, lm.sample_shape or width, names or lm.feature_names, class_names)
    if modality == CAUSAL_LM and tokenizer is not None:  # a tokenizer that does not fit: now, not later
        from ..language import check_language_model

        check_language_model(lm.model, tokenizer)
    data = s.data
    if data is None:
        if s.preprocess is not None:
            raise InputError(f"{w.name('preprocess')} maps rows of the data to the model's inputs; "
                             f"give the data too ({w.give('data', 'rows.csv')})")
        return p
    texts = None
    if isinstance(data, (str, Path)) and Path(data).suffix.lower() == ".txt":
        if not Path(data).is_file():
            raise InputError(f"{w.name('data')} {Path(data).name}: no such file")
        texts = [ln.strip() for ln in Path(data).read_text(encoding="utf-8").splitlines() if ln.strip()]
    elif isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
        texts = list(data)
    if texts is not None and modality == CAUSAL_LM:  # a language model's example prompts
        if not texts:
            raise InputError(f"{w.name('data')}: the text file has no lines")
        p.texts = texts
        return p
    if texts is not None:
        if tokenizer is None:
            raise InputError(f"texts need a tokenizer: give {w.give('tokenizer', 'package.module:tokenizer')} "
                             "or a model with a .tokenizer attribute")
        if not texts:
            raise InputError(f"{w.name('data')}: the text file has no lines")
        ids, toks = _tokenize(texts, tokenizer)
        p.modality, p.samples, p.texts, p.tokens = "text", ids, texts, toks
        p.sample_shape = tuple(ids.shape[1:])
        return p
    known = getattr(s.preprocess, "categories", None)
    t = _as_table(data, s, known if isinstance(known, dict) else None, w)
    if t.X.shape[0] < 1:
        raise InputError(f"{w.name('data')}: the table has no rows")
    pre = s.preprocess
    n_cols = t.X.shape[1]
    if pre is not None:
        if not callable(pre):
            raise InputError(f"{w.name('preprocess')} must be a function of the table's rows, got "
                             f"{type(pre).__name__}")
        try:
            used = used_columns(pre, t.X)
        except Exception as exc:
            raise InputError(f"{w.name('preprocess')} failed on the data's rows ({t.describe()}, "
                             f"columns {', '.join(t.names)}): {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        p.kept_aside = [n for n, u in zip(t.names, used) if not u]
    elif names is not None and set(names) <= set(t.names) and len(names) < n_cols:
        pre = _Columns([t.names.index(n) for n in names])
        p.kept_aside = [n for n in t.names if n not in names]
    elif names is not None and len(names) != n_cols:
        unknown = [n for n in names if n not in t.names]
        raise InputError(f"{w.name('feature_names')} names {', '.join(unknown[:5])}, which the data "
                         f"({t.describe()}) does not have; its columns are {', '.join(t.names)}")
    elif t.categories:
        raise InputError(f"the data has text columns ({', '.join(t.categories)}), which the model "
                         f"cannot take as they are; give {w.give('preprocess', 'package.module:object')} "
                         "that turns the table's rows (text coded 0, 1, …) into the model's inputs")
    elif p.sample_shape is not None and len(p.sample_shape) == 1 and p.sample_shape[0] != n_cols:
        k = p.sample_shape[0]
        raise InputError(
            f"the data ({t.describe()}) has {n_cols} columns; the model takes {k}. "
            + (f"Name the model's {k} columns with {w.give('feature_names', 'a,b,…')} (the others are "
               f"kept aside for the audit) or give {w.name('preprocess')}" if k < n_cols else
               f"Give {w.give('preprocess', 'package.module:object')} that makes the model's inputs"))
    else:
        p.kept_aside = []
    x = model_inputs(pre, t.X)
    _check_runs(lm.model, x, w)
    p.modality = "tabular" if x.ndim == 2 else (p.modality or None)
    p.sample_shape = tuple(x.shape[1:])
    p.samples, p.labels, p.table, p.preprocess = x, t.labels, t, pre
    fn = p.feature_names
    if fn is None or len(fn) != x.shape[1]:
        fn = (_output_names(pre, x.shape[1]) if pre is not None and not isinstance(pre, _Columns) else None) or (
            [t.names[j] for j in pre.index] if isinstance(pre, _Columns) else
            list(t.names) if pre is None else None)
    p.feature_names = fn
    if p.class_names is None and t.label_names is not None:
        p.class_names = t.label_names
    return p


def _check_runs(model: Any, x: torch.Tensor, w: Wording) -> None:
    """The model answers on two rows of the data (a clear error before the dashboard starts)."""
    from ..core.model import as_model

    try:
        m = as_model(model)
        with m.guard(), torch.no_grad():
            m.forward(m.prepare(x[:2]))
    except Exception as exc:
        raise ModelError(f"the model cannot take the data's rows (inputs of shape "
                         f"{tuple(x.shape[1:])}): {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}; check {w.name('data')}, "
                         f"{w.name('feature_names')} and {w.name('preprocess')}") from exc
