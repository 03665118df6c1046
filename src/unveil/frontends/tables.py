"""A model's own data as a table: CSV (text categories allowed), ``.npy`` or ``.parquet``, read
into numbers the tools can use.

Surrogates and audits work on numeric rows (``preprocess=`` maps them to the model's inputs), so
a text column is coded ``0, 1, …``: in the order its preprocess object lists under
``categories[column]`` when it has such a dict, else in sorted order. The codes keep their words
(:attr:`DataTable.categories`) so that front ends show and edit ``region = south``, not ``1``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .wording import PYTHON, Wording

__all__ = ["DATA_SUFFIXES", "DataTable", "encode_cells", "read_csv_cells", "read_data_file", "split_names", "take_labels"]

DATA_SUFFIXES = (".csv", ".tsv", ".npy", ".parquet")


@dataclass
class DataTable:
    """Rows of a table as numbers, with column names, the words behind coded text columns
    (``categories[name] = [word of code 0, word of code 1, …]``) and the true labels taken out
    of a label column."""

    X: np.ndarray  # (N, F) float64
    names: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    labels: np.ndarray | None = None
    label_names: list[str] | None = None  # the words of text labels (code order), if any

    def describe(self) -> str:
        """``"a table of 600 rows and 7 columns"`` for messages and pages."""
        n, f = self.X.shape
        return f"a table of {n} row{'s' if n != 1 else ''} and {f} column{'s' if f != 1 else ''}"


def split_names(text: str | Sequence[str] | None) -> list[str] | None:
    """Names given as ``"a,b,c"`` (or a list): stripped, none empty."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(s).strip() for s in items]
    if not names or any(not s for s in names):
        raise InputError(f"expected comma-separated names like 'a,b,c', got {text!r}")
    return names


def _number(c: str) -> float | None:
    try:
        return float(c)
    except ValueError:
        return None


def read_csv_cells(text: str, name: str) -> tuple[list[str] | None, list[list[str]]]:
    """The header (when the first row names the columns) and the cells of CSV text."""
    rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{name}: the CSV file has no rows")
    header = None
    first = rows[0]
    # a header: a first row without numbers, or one whose text cells sit above numeric cells
    if len(rows) > 1 and (all(_number(c) is None for c in first) or any(
            _number(c) is None and _number(d) is not None for c, d in zip(first, rows[1]))):
        header, rows = first, rows[1:]
    if not rows:
        raise InputError(f"{name}: the CSV file has a header but no data rows")
    width = len(header) if header is not None else len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise InputError(f"{name}: row {i + 1} has {len(r)} columns, expected {width}")
    return header, rows


def encode_cells(header: Sequence[str] | None, cells: Sequence[Sequence[Any]], name: str, *,
                 known: Mapping[str, Sequence[str]] | None = None) -> DataTable:
    """Rows of cells (text or numbers) as a numeric table: numeric columns as they are, text
    columns coded in the order ``known[column]`` lists (else sorted). An empty cell or a word in
    a numeric column is an error naming the row and column."""
    n = len(cells)
    width = len(header) if header is not None else (len(cells[0]) if n else 0)
    names = [str(h) for h in header] if header is not None else [f"x{j}" for j in range(width)]
    if len(set(names)) != len(names):
        dup = sorted({s for s in names if names.count(s) > 1})
        raise InputError(f"{name}: the header repeats column names {dup}; give each column its own name")
    X = np.empty((n, width), dtype=np.float64)
    cats: dict[str, list[str]] = {}
    for j, col in enumerate(names):
        vals = [r[j] for r in cells]
        nums = [_number(str(v)) if not isinstance(v, (int, float, np.number)) else float(v) for v in vals]
        missing = [i for i, v in enumerate(vals) if str(v).strip() == ""]
        if missing:
            raise InputError(f"{name}: row {missing[0] + 1}, column {col!r} is empty; fill in or drop "
                             "missing values first")
        text = [i for i, v in enumerate(nums) if v is None]
        if not text:
            X[:, j] = np.asarray(nums, dtype=np.float64)
            continue
        if len(text) < n:  # mostly numbers with a few words: most likely a typo
            i = text[0]
            if len(text) * 2 < n:
                raise InputError(f"{name}: row {i + 1}, column {col!r} is not a number: {vals[i]!r} "
                                 "(the column's other cells are numbers)")
        words = [str(v).strip() for v in vals]
        order = list(known[col]) if known and col in known else sorted(set(words))
        code = {w: k for k, w in enumerate(order)}
        unknown = sorted(set(words) - set(code))
        if unknown:
            raise InputError(f"{name}: column {col!r} holds {unknown[:5]}, which are not among its "
                             f"known values {order} (the preprocess object's categories, or the "
                             "model's data)")
        X[:, j] = [code[w] for w in words]
        cats[col] = order
    if not np.isfinite(X).all():
        raise InputError(f"{name}: the table holds NaN or infinite values; impute them first")
    return DataTable(X, names, cats)


def take_labels(t: DataTable, label_column: str, name: str, w: Wording = PYTHON,
                class_names: Sequence[str] | None = None) -> DataTable:
    """``t`` without its column ``label_column`` (a name or an index), whose values become the
    true labels (text labels: indices of ``class_names`` when they name them all)."""
    if label_column in t.names:
        j = t.names.index(label_column)
    elif label_column.lstrip("-").isdigit() and -len(t.names) <= int(label_column) < len(t.names):
        j = int(label_column) % len(t.names)
    else:
        raise InputError(f"{name}: no label column {label_column!r} for {w.name('label_column')}; "
                         f"the columns are {', '.join(t.names)} (or give a column index)")
    col = t.names[j]
    y = t.X[:, j]
    label_names = None
    if col in t.categories:  # text labels: read them as class names when they are
        words = t.categories[col]
        if class_names is not None and set(words) <= set(class_names):
            y = np.array([list(class_names).index(words[int(c)]) for c in y], dtype=np.float64)
        else:
            label_names = words
    labels = y.astype(np.int64) if np.all(y == np.round(y)) else y.copy()
    cats = {k: v for k, v in t.categories.items() if k != col}
    return DataTable(np.ascontiguousarray(np.delete(t.X, j, axis=1)),
                     [n for k, n in enumerate(t.names) if k != j], cats, labels, label_names)


def read_data_file(path: str | Path, *, label_column: str | None = None,
                   names: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                   known: Mapping[str, Sequence[str]] | None = None,
                   wording: Wording = PYTHON) -> DataTable:
    """Read a model's data: CSV/TSV (a header row, text categories allowed), ``.npy`` (numbers,
    never pickles) or ``.parquet``. ``names`` name the columns of a file without a header;
    ``label_column`` (a name or an index) takes the true labels out; ``known`` fixes the coding
    of text columns (see the module's docstring)."""
    p = Path(path)
    w = wording
    what = f"{w.name('data')} {p.name}" if w.cli else p.name
    suffix = p.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise InputError(f"{what}: unsupported data file {suffix or 'without a suffix'!r}; give a "
                         ".csv, .tsv, .npy or .parquet table")
    if not p.is_file():
        raise InputError(f"{what}: no such file")
    header: list[str] | None
    if suffix in (".csv", ".tsv"):
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{what}: not UTF-8 text; save the table as a UTF-8 CSV file") from None
        if suffix == ".tsv":
            text = text.replace("\t", ",")
        header, cells = read_csv_cells(text, what)
    elif suffix == ".npy":
        from .inputs import read_npy

        a = read_npy(p.read_bytes(), what)
        if a.ndim != 2:
            raise InputError(f"{what}: expected a table (rows, columns), got an array of shape {a.shape}")
        header, cells = None, a.astype(np.float64).tolist()
    else:
        from ..errors import require

        require("pandas", "audit")
        import pandas as pd

        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # pyarrow's errors have many types
            raise InputError(f"{what}: cannot read as parquet ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        header = [str(c) for c in df.columns]
        cells = df.astype(object).where(df.notna(), "").values.tolist()
    if not cells:
        raise InputError(f"{what}: the table has no rows")
    if names is not None:
        width = len(cells[0])
        if header is None and len(names) == width:
            header = list(names)
    table = encode_cells(header, cells, what, known=known)
    if label_column is not None:
        table = take_labels(table, label_column, what, w, class_names)
    return table
