"""Reading the dashboard's uploads by their content: images, ``.npy`` arrays, CSV tables and text.

Every size a file declares in its header (an image's width and height, an array's shape) is
checked against the caps before anything of that size is allocated; ``.npy`` files are read
from their header and raw bytes, never unpickled. A bad file gets a 4xx with a message that
says what was expected (:class:`~unveil.serve._state.ApiError` or :class:`~unveil.errors.InputError`).

:func:`read_table` turns CSV bytes into a header and a grid of cells (strings) and nothing
more, so that callers decide how columns map to the model's input; :func:`parse_upload` is the
dashboard's default reading for a model.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..frontends import read_image
from ._state import ApiError, Entry, Upload

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_CELL_CHARS", "Table", "parse_upload", "read_array",
           "read_table", "sniff"]

#: Most pixels (width x height) an uploaded image may declare: 4096 x 4096.
DEFAULT_MAX_PIXELS = 4096 * 4096
#: Longest table cell accepted (a number or a short name fits with room to spare).
MAX_CELL_CHARS = 1000
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_NPY_MAGIC = b"\x93NUMPY"
_BOM = b"\xef\xbb\xbf"
_SEPARATORS = ("\t", ";", ",")  # preferred in this order when several split every line evenly
_UNSUPPORTED = ("unsupported upload: send a PNG, JPEG, GIF or BMP image, a .npy array, or CSV "
                "rows (tables) saved as UTF-8 text")


def sniff(data: bytes) -> str:
    """``"npy"``, ``"image"``, ``"text"`` (UTF-8, with or without a byte-order mark) or ``"unknown"``."""
    if data.startswith(_NPY_MAGIC):
        return "npy"
    if any(data.startswith(m) for m in _IMAGE_MAGIC):
        return "image"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text"


_sniff = sniff  # the name the dashboard used before this module


def _text(data: bytes) -> str:
    """UTF-8 text without a leading byte-order mark."""
    return data[len(_BOM):].decode("utf-8") if data.startswith(_BOM) else data.decode("utf-8")


# -- tables ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Table:
    """A CSV table as read: column names (``None`` when the first row holds numbers), the cells
    as strings (rows x columns, stripped of surrounding blanks) and the separator found."""

    header: list[str] | None
    cells: np.ndarray
    separator: str

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the data, the header not counted."""
        return int(self.cells.shape[0]), int(self.cells.shape[1])

    def numbers(self, what: str = "the CSV upload") -> np.ndarray:
        """The cells as float32 numbers; a cell that is not a number is named by row and column."""
        try:
            return self.cells.astype(np.float32)
        except ValueError:
            pass
        for i, row in enumerate(self.cells):
            for j, c in enumerate(row):
                try:
                    float(c)
                except ValueError:
                    hint = " (decimal commas are not read: write 1.5, not 1,5)" if "," in c else ""
                    raise InputError(f"{what}: row {i + 1}, column {j + 1} is not a number: "
                                     f"{c[:40]!r}{hint}") from None
        raise InputError(f"{what}: the cells are not all numbers")  # pragma: no cover


def _separator(lines: list[str]) -> str:
    """The separator that splits every sampled line into the same number (> 1) of cells."""
    for sep in _SEPARATORS:
        counts = {ln.count(sep) for ln in lines}
        if len(counts) == 1 and counts.pop() > 0:
            return sep
    for sep in _SEPARATORS:  # uneven rows: the caller names the ragged row
        if any(sep in ln for ln in lines):
            return sep
    return ","


def _is_number(c: str) -> bool:
    try:
        float(c)
    except ValueError:
        return False
    return True


def read_table(data: bytes, *, max_rows: int | None = None, what: str = "the CSV upload") -> Table:
    """Header and cells of a CSV table in UTF-8 (a byte-order mark is dropped), with rows ended
    by ``\\n``, ``\\r\\n`` or ``\\r`` and cells separated by commas, semicolons or tabs (found
    from the first lines). A first row without any number is the header. Blank lines are
    skipped; at most ``max_rows`` data rows (413 above), each as wide as the first."""
    try:
        text = _text(data)
    except UnicodeDecodeError as exc:
        raise ApiError(415, f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                            "save the table as UTF-8 CSV") from None
    sample = [ln for ln in text[:64 * 1024].splitlines()[:20] if ln.strip()]
    if not sample:
        raise InputError(f"{what}: the CSV file has no rows")
    cut = len(text) > 64 * 1024
    sep = _separator(sample[:-1] if cut and len(sample) > 1 else sample)  # the last may be cut
    rows: list[list[str]] = []
    header: list[str] | None = None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        for r in reader:
            if not r or not any(c.strip() for c in r):
                continue
            cells = [c.strip() for c in r]
            if header is None and not rows and not any(_is_number(c) for c in cells):
                header = cells
                continue
            if rows and len(cells) != len(rows[0]):
                raise InputError(f"{what}: row {len(rows) + 1} has {len(cells)} columns, "
                                 f"expected {len(rows[0])} (separator {sep!r})")
            long = max(len(c) for c in cells)
            if long > MAX_CELL_CHARS:
                raise InputError(f"{what}: row {len(rows) + 1} has a cell of {long} characters; "
                                 f"a cell holds a number or a short name (at most {MAX_CELL_CHARS})")
            rows.append(cells)
            if max_rows is not None and len(rows) > max_rows:
                raise ApiError(413, f"{what} has more than {max_rows} rows; at most {max_rows} "
                                    "are accepted")
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise InputError(f"{what}: line {reader.line_num} has a cell longer than "
                             f"{csv.field_size_limit()} characters; a cell holds a number or a "
                             "short name") from None
        raise InputError(f"{what}: not a readable CSV table (line {reader.line_num}: {exc})") from None
    if not rows:
        raise InputError(f"{what}: the CSV file has a header but no data rows" if header is not None
                         else f"{what}: the CSV file has no rows")
    if header is not None and len(header) != len(rows[0]):
        raise InputError(f"{what}: the header has {len(header)} names for {len(rows[0])} columns "
                         f"(separator {sep!r})")
    return Table(header, np.array(rows, dtype=str), sep)


# -- arrays ---------------------------------------------------------------------------------

def read_array(data: bytes, what: str = "the .npy upload", *, max_elements: int | None = None
               ) -> np.ndarray:
    """A numeric array from ``.npy`` bytes. The header is read first: object arrays (pickles)
    are never loaded; structured and complex arrays, empty ones, and shapes the bytes cannot
    hold are refused before any allocation."""
    fmt = np.lib.format
    f = io.BytesIO(data)
    try:
        version = fmt.read_magic(f)
    except ValueError as exc:
        raise InputError(f"{what}: not a readable .npy header ({exc})") from None
    read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if read is None:
        raise InputError(f"{what}: .npy format version {version[0]}.{version[1]} is not read; "
                         "save a plain numeric array with numpy.save")
    try:
        shape, fortran, dtype = read(f)
    except Exception as exc:  # noqa: BLE001 - a hostile header fails in many ways (tokenize, ast…)
        raise InputError(f"{what}: not a readable .npy header ({type(exc).__name__})") from None
    if dtype.hasobject:
        raise InputError(f"{what}: holds Python objects; pickled object arrays are never loaded. "
                         "Save a numeric array")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{what}: a structured array ({dtype}); save a plain numeric array")
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{what}: complex numbers ({dtype}); the model takes real numbers. "
                         "Save the real part (a.real) or the magnitude (abs(a))")
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise InputError(f"{what}: expected a numeric array, got {dtype}")
    if len(shape) == 0:
        raise InputError(f"{what}: a single number; save a batch of rows, e.g. shape (N, features)")
    count = 1
    for d in shape:
        count *= int(d)
    if count == 0:
        raise InputError(f"{what}: has shape {tuple(shape)}, with no values; save at least one row")
    if max_elements is not None and count > max_elements:
        raise ApiError(413, f"{what}: has shape {tuple(shape)} ({count} values); at most "
                            f"{max_elements} values are accepted")
    have = len(data) - f.tell()
    if count * dtype.itemsize != have:
        raise InputError(f"{what}: the header says shape {tuple(shape)} of {dtype} "
                         f"({count * dtype.itemsize} bytes) but the file holds {have} bytes of data")
    a = np.frombuffer(data, dtype=dtype, count=count, offset=f.tell())
    return a.reshape(shape, order="F" if fortran else "C").copy()


# -- images ---------------------------------------------------------------------------------

def _image(data: bytes, entry: Entry, max_pixels: int) -> np.ndarray:
    """(1, C, H, W) in [0, 1], after checking the declared width and height."""
    from ..errors import require

    require("PIL", "viz")
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():  # the pixel cap below is the dashboard's own guard
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                w, h = im.size
        except Image.DecompressionBombError:
            w, h = -1, -1
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"the upload: not a readable image ({exc})") from None
        if w < 0 or w * h > max_pixels:
            size = "more than PIL opens" if w < 0 else f"{w} x {h} pixels"
            raise ApiError(413, f"the image is {size}; at most {max_pixels} pixels are accepted "
                                "(shrink it first)")
        shape = entry.sample_shape
        ch, hw = (shape[0], (shape[1], shape[2])) if shape and len(shape) == 3 else (None, None)
        try:
            return read_image(data, "the upload", channels=ch, size=hw)[None]
        except Image.DecompressionBombError as exc:  # pragma: no cover - caught by the cap
            raise ApiError(413, f"the image is too large ({exc})") from None


# -- the upload -----------------------------------------------------------------------------

def _fit_shape(a: np.ndarray, entry: Entry, what: str) -> np.ndarray:
    shape = entry.sample_shape
    if shape is not None and tuple(a.shape) == shape:
        a = a[None]
    if shape is not None and tuple(a.shape[1:]) != shape:
        raise InputError(f"{what} has samples of shape {tuple(a.shape[1:])}; model "
                         f"{entry.name!r} takes {shape}")
    return a


def parse_upload(data: bytes, entry: Entry, max_rows: int, max_table_rows: int | None = None, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Upload:
    """Read an uploaded file by its content (PNG/JPEG/GIF/BMP image, ``.npy``, CSV or text).

    A CSV table may hold ``max_table_rows`` rows (for surrogates and audits), other uploads
    ``max_rows``; an image at most ``max_pixels`` pixels."""
    kind = sniff(data)
    tokens = None
    rows = None
    table = entry.modality == "tabular"
    limit = max_table_rows if kind == "text" and table and max_table_rows else max_rows
    if kind == "image":
        if entry.modality != "image":
            raise ApiError(415, f"model {entry.name!r} takes {entry.modality} inputs, not images")
        a = _image(data, entry, max_pixels)
    elif kind == "npy":
        a = read_array(data, "the .npy upload")  # no larger than the upload's bytes
        a = _fit_shape(a, entry, "the .npy upload")
        if entry.modality != "text":
            a = a.astype(np.float32)
    elif kind == "text" and table:
        t = read_table(data, max_rows=limit)
        rows, xt = entry.table_inputs(t.header, t.cells.tolist(), "the CSV upload")
        a = _fit_shape(xt.numpy(), entry, "the CSV upload")
    elif kind == "text" and entry.modality == "text" and entry.tokenizer is not None:
        lines = [ln.strip() for ln in _text(data).splitlines() if ln.strip()][:max_rows]
        if not lines:
            raise InputError("the text upload is empty")
        enc = entry.tokenizer(lines, return_tensors="pt", padding=True, truncation=True)
        a = enc["input_ids"].numpy()
        tokens = [list(entry.tokenizer.convert_ids_to_tokens(r.tolist())) for r in enc["input_ids"]]
    else:
        raise ApiError(415, _UNSUPPORTED)
    if a.shape[0] > limit:
        raise ApiError(413, f"the upload has {a.shape[0]} rows; at most {limit} are accepted")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise InputError("the upload contains NaN or infinite values")
    return Upload(entry.name, torch.from_numpy(np.ascontiguousarray(a)), kind, tokens, rows=rows)
