"""Reading an :class:`~unveil.Explanation` archive without trusting it.

An archive is a zip of ``.npy`` members plus a ``__meta__`` member (UTF-8 JSON stored as a uint8
array). :func:`read_archive` checks it in the order that keeps a hostile file cheap to refuse:

1. the zip's central directory, before anything is decompressed: member names, compression
   methods, the total uncompressed size (``max_bytes``) and each member's compression ratio
   (:data:`MAX_RATIO`, above what deflate can reach, so only a lying or foreign member trips it);
2. each member's ``.npy`` header: a numeric dtype, and a shape whose bytes fill the member
   exactly (so no allocation is larger than the member the directory declared);
3. the metadata: UTF-8, at most :data:`MAX_META_BYTES`, nested at most :data:`MAX_DEPTH` levels
   (counted on the text before :func:`json.loads`, so no ``RecursionError``), and the type of
   every known field;
4. the arrays against the metadata: the dtype and shape declared for each (files written before
   they were declared are checked for consistency between arrays instead).

Nothing is ever unpickled. Every failure is an :class:`~unveil.errors.InputError`.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OptionError

__all__ = ["DEFAULT_MAX_BYTES", "MAX_DEPTH", "MAX_META_BYTES", "MAX_RATIO", "check_meta_text",
           "read_archive"]

DEFAULT_MAX_BYTES = 2 * 1024**3
"""Default cap on the total uncompressed size of an archive (2 GiB)."""
MAX_RATIO = 1100
"""Largest uncompressed/compressed size ratio of one member (deflate peaks near 1032)."""
MAX_META_BYTES = 16 * 1024**2
MAX_DEPTH = 64
MAX_MEMBERS = 10_000
_NUMERIC = frozenset("biuf")  # bool, signed, unsigned, float
_META = "__meta__"
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError,
               NotImplementedError, RuntimeError, OSError)


def _fail(path: str | Path, reason: str) -> InputError:
    return InputError(f"cannot load {path}: {reason}")


# -- metadata ------------------------------------------------------------------------------
def _depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, strings ignored (no recursion)."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _STRING.sub("", text)).encode(), dtype=np.uint8)
    deepest = level = 0
    for start in range(0, brackets.size, 1 << 20):  # chunks bound the working memory
        b = brackets[start:start + (1 << 20)]
        steps = np.where((b == ord("[")) | (b == ord("{")), 1, -1).astype(np.int32)
        depth = level + np.cumsum(steps)
        deepest, level = max(deepest, int(depth.max())), int(depth[-1])
    return deepest


def check_meta_text(text: str) -> str | None:
    """Why a metadata text would be refused on load (size or depth), or ``None``."""
    if len(text) > MAX_META_BYTES:
        return f"metadata is larger than {MAX_META_BYTES} bytes"
    if _depth(text) > MAX_DEPTH:
        return f"metadata nests deeper than {MAX_DEPTH} levels"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


_FIELDS: dict[str, tuple[str, Any, bool]] = {  # name: (expected, check, required)
    "format": ("a str", lambda v: isinstance(v, str), True),
    "method": ("a str", lambda v: isinstance(v, str), True),
    "params": ("an object", lambda v: isinstance(v, dict), True),
    "seed": ("an int or null", lambda v: v is None or _is_int(v), True),
    "n_evals": ("an int >= 0", lambda v: _is_int(v) and v >= 0, True),
    "timings": ("an object of numbers",
                lambda v: isinstance(v, dict) and all(_is_number(t) for t in v.values()), True),
    "quality": ("an object", lambda v: isinstance(v, dict), True),
    "groups": ("an object or null", lambda v: v is None or isinstance(v, dict), True),
    "modality": ("a str", lambda v: isinstance(v, str), True),
    "feature_names": ("a list of str or null", lambda v: v is None or _is_str_list(v), True),
    "class_names": ("a list of str or null", lambda v: v is None or _is_str_list(v), True),
    "fingerprint": ("a str or null", lambda v: v is None or isinstance(v, str), True),
    "meta": ("an object", lambda v: isinstance(v, dict), False),
    "saved_at": ("a str", lambda v: isinstance(v, str), False),
    "extras": ("a list of str", _is_str_list, False),
    "arrays": ("an object", lambda v: isinstance(v, dict), False),
}
_GROUP_FIELDS: dict[str, tuple[str, Any]] = {
    "kind": ("a str", lambda v: isinstance(v, str)),
    "n_groups": ("an int >= 0", lambda v: _is_int(v) and v >= 0),
    "names": ("a list of str", _is_str_list),
}


def _check_schema(path: str | Path, meta: Any, fmt: str) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise _fail(path, f"metadata is a JSON {type(meta).__name__}, expected an object")
    for name, (expected, ok, required) in _FIELDS.items():
        if name not in meta:
            if required:
                raise _fail(path, f"metadata field {name!r} is missing")
            continue
        if not ok(meta[name]):
            raise _fail(path, f"metadata field {name!r} must be {expected}, got {meta[name]!r:.60}")
    if meta["format"] != fmt:
        raise _fail(path, f"format {meta['format']!r:.60}, expected {fmt!r}")
    for name, (expected, ok) in _GROUP_FIELDS.items():
        if meta["groups"] is not None and name in meta["groups"] and not ok(meta["groups"][name]):
            raise _fail(path, f"metadata field 'groups.{name}' must be {expected}")
    for name, spec in meta.get("arrays", {}).items():
        if not (isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
                and isinstance(spec.get("shape"), list)
                and all(_is_int(d) and d >= 0 for d in spec["shape"])):
            raise _fail(path, f"metadata declares array {name!r} without a dtype str and a shape")
    return meta


def _parse_meta(path: str | Path, raw: bytes, fmt: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"metadata is not UTF-8 (byte {exc.start})") from None
    why = check_meta_text(text)
    if why is not None:
        raise _fail(path, why)
    try:
        meta = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and over-long integers
        raise _fail(path, f"metadata is not valid JSON ({exc})") from None
    return _check_schema(path, meta, fmt)


# -- zip members ---------------------------------------------------------------------------
def _directory(path: str | Path, zf: zipfile.ZipFile, max_bytes: int,
               allowed: Iterable[str]) -> dict[str, zipfile.ZipInfo]:
    """Member name (without ``.npy``) -> ZipInfo, from the central directory alone."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _fail(path, f"the archive has {len(infos)} members, more than {MAX_MEMBERS}")
    fixed = set(allowed)
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else None
        if key is None or not (key in fixed or key == _META or key.startswith(("extras.", "groups."))):
            raise _fail(path, f"unexpected member {info.filename!r:.80}")
        if key in out:
            raise _fail(path, f"member {info.filename!r} appears twice")
        if info.flag_bits & 0x1:
            raise _fail(path, f"member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(path, f"member {info.filename!r} uses an unsupported compression method")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise _fail(path, f"member {info.filename!r} claims a compression ratio above "
                              f"{MAX_RATIO} ({info.compress_size} -> {info.file_size} bytes)")
        out[key] = info
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise _fail(path, f"the archive would decompress to {total} bytes, more than "
                          f"max_bytes={max_bytes}")
    if _META not in out:
        raise _fail(path, "not an unveil Explanation file (no __meta__ member)")
    for key in ("values", "inputs"):
        if key not in out:
            raise _fail(path, f"required array {key!r} is missing")
    return out


def _header(path: str | Path, zf: zipfile.ZipFile, key: str,
            info: zipfile.ZipInfo) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """dtype and shape of a ``.npy`` member, checked against its declared size."""
    with zf.open(info) as fp:
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (zipfile.BadZipFile, zlib.error, EOFError):
            raise
        except Exception as exc:  # literal_eval of a hostile header: Syntax/Token/Value errors...
            raise _fail(path, f"array {key!r} has a malformed .npy header "
                              f"({type(exc).__name__})") from None
        offset = fp.tell()
    if dtype.kind not in _NUMERIC:
        what = "an object array (never unpickled)" if dtype.hasobject else f"of dtype {dtype}"
        raise _fail(path, f"array {key!r} is {what}; only bool, integer and float arrays are loaded")
    if offset + math.prod(shape) * dtype.itemsize != info.file_size:
        raise _fail(path, f"array {key!r} of shape {shape} and dtype {dtype} does not fit its "
                          f"{info.file_size}-byte member")
    return dtype, tuple(shape)


def _check_arrays(path: str | Path, meta: dict[str, Any],
                  heads: dict[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> None:
    declared = meta.get("arrays")
    if declared is not None:
        for key in sorted(set(declared) | set(heads)):
            if key not in heads:
                raise _fail(path, f"array {key!r} declared in the metadata is missing")
            if key not in declared:
                raise _fail(path, f"array {key!r} is not declared in the metadata")
            dtype, shape = heads[key]
            want = declared[key]
            if dtype.str != want["dtype"] or list(shape) != want["shape"]:
                raise _fail(path, f"array {key!r} is {dtype.str} {list(shape)}, the metadata "
                                  f"declares {want['dtype']!r:.20} {want['shape']!s:.60}")
    if "extras" in meta:
        stored = sorted(k[7:] for k in heads if k.startswith("extras."))
        if sorted(meta["extras"]) != stored:
            raise _fail(path, f"the metadata lists extras {sorted(meta['extras'])!s:.80}, the "
                              f"archive holds {stored!s:.80}")
    # whatever the metadata says, the arrays must agree with each other
    values, inputs = heads["values"][1], heads["inputs"][1]
    for key, shape in (("values", values), ("inputs", inputs)):
        if len(shape) < 2 or 0 in shape[1:]:
            raise _fail(path, f"{key!r} has shape {shape}, expected (N, ...) with a non-empty sample")
    n = values[0]
    if inputs[0] != n:
        raise _fail(path, f"'inputs' has {inputs[0]} rows, 'values' has {n}")
    for key in ("targets", "outputs", "baseline_outputs", "delta"):
        if key in heads and heads[key][1] != (n,):
            raise _fail(path, f"{key!r} has shape {heads[key][1]}, expected ({n},)")
    if "targets" in heads and heads["targets"][0].kind not in "iu":
        raise _fail(path, f"'targets' has dtype {heads['targets'][0]}, expected integers")
    if "stderr" in heads and heads["stderr"][1][:1] != (n,):
        raise _fail(path, f"'stderr' has shape {heads['stderr'][1]}, expected {n} rows")
    groups = meta.get("groups") or {}
    _check_groups(path, groups, heads)
    _check_drawable(path, meta["modality"], groups.get("n_groups"), heads)


def _check_groups(path: str | Path, groups: dict[str, Any],
                  heads: dict[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> None:
    """Group labels/masks fit the samples and name groups that exist (what rendering assumes)."""
    inputs = heads["inputs"][1]
    sample, g = inputs[1:], groups.get("n_groups")
    has_map = "groups.labels" in heads or "groups.masks" in heads
    if has_map and g is None:
        raise _fail(path, "group labels or masks are stored without 'groups.n_groups'")
    if "groups.labels" in heads:
        dtype, shape = heads["groups.labels"]
        if dtype.kind not in "iu" or shape[1:] != sample or shape[:1] not in ((1,), (inputs[0],)):
            raise _fail(path, f"'groups.labels' is {dtype} {shape}, expected integers of shape "
                              f"(1 or {inputs[0]}, *{sample})")
    if "groups.masks" in heads and heads["groups.masks"][1] != (g, *sample):
        raise _fail(path, f"'groups.masks' has shape {heads['groups.masks'][1]}, expected "
                          f"({g}, *{sample})")
    names = groups.get("names")
    if names and g is not None and len(names) != g:
        raise _fail(path, f"'groups.names' has {len(names)} names for {g} groups")


def _check_drawable(path: str | Path, modality: str, g: Any,
                    heads: dict[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> None:
    """Values that the report can draw over the inputs (as images or as tables)."""
    (xdtype, inputs), values = heads["inputs"], heads["values"][1]
    has_map = "groups.labels" in heads or "groups.masks" in heads
    per_sample = inputs[1:] if len(values) == 2 and has_map and values[1] == g else values[1:]
    if modality == "text" or xdtype.kind != "f":
        return
    if modality == "image" or len(inputs) == 4:
        if len(inputs) not in (3, 4):
            raise _fail(path, f"image inputs of shape {inputs}, expected (N, H, W) or (N, C, H, W)")
        hw = math.prod(inputs[-2:])
        if not (len(per_sample) in (2, 3) or (len(per_sample) == 1 and per_sample[0] == hw)):
            raise _fail(path, f"values of shape {values} cannot be drawn over images of shape "
                              f"{inputs[1:]} (group values need group labels or masks)")
    elif len(inputs) == 2 and math.prod(values[1:]) not in (inputs[1], g):
        raise _fail(path, f"values of shape {values} over table rows of {inputs[1]} features")


def _check_values(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Checks that need the data: group labels in range, token ids that are numbers."""
    x = arrays["inputs"]
    if meta["modality"] == "text" and x.dtype.kind == "f" and not np.isfinite(x).all():
        raise _fail(path, "text inputs (token ids) hold NaN or infinite values")
    lab = arrays.get("groups.labels")
    if lab is not None and lab.size:
        g = meta["groups"]["n_groups"]
        lo, hi = int(lab.min()), int(lab.max())
        if lo < -1 or hi >= g:
            raise _fail(path, f"'groups.labels' range from {lo} to {hi}, expected -1 to {g - 1}")


def _read_all(path: str | Path, zf: zipfile.ZipFile, fmt: str, max_bytes: int,
              fields: Iterable[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    infos = _directory(path, zf, max_bytes, fields)
    meta_info = infos.pop(_META)
    if meta_info.file_size > MAX_META_BYTES + 4096:
        raise _fail(path, f"metadata is larger than {MAX_META_BYTES} bytes")
    dtype, shape = _header(path, zf, _META, meta_info)
    if dtype != np.uint8 or len(shape) != 1:
        raise _fail(path, f"metadata is stored as {dtype} {shape}, expected a 1-d uint8 array")
    with zf.open(meta_info) as fp:
        raw = np.lib.format.read_array(fp, allow_pickle=False)
    meta = _parse_meta(path, raw.tobytes(), fmt)
    heads = {key: _header(path, zf, key, info) for key, info in infos.items()}
    _check_arrays(path, meta, heads)
    arrays = {}
    for key, info in infos.items():
        with zf.open(info) as fp:
            arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
    _check_values(path, meta, arrays)
    return meta, arrays


def read_archive(path: str | Path, *, fmt: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 fields: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Check and read an Explanation archive: ``(metadata, arrays by member name)``.

    ``fields`` names the top-level arrays the archive may hold besides ``extras.*`` and
    ``groups.*``. A missing file raises :class:`FileNotFoundError`; anything malformed raises
    :class:`~unveil.errors.InputError`.
    """
    if not _is_int(max_bytes) or max_bytes < 0:
        raise OptionError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    with open(path, "rb") as fh:
        try:
            with zipfile.ZipFile(fh) as zf:
                return _read_all(path, zf, fmt, max_bytes, fields)
        except InputError:
            raise
        except zipfile.BadZipFile as exc:
            fh.seek(0)
            if fh.read(4) != b"PK\x03\x04":
                raise _fail(path, "not a zip archive (an unveil Explanation is an .npz file)") from None
            raise _fail(path, f"corrupt or truncated archive ({exc})") from None
        except _ZIP_ERRORS as exc:
            raise _fail(path, f"corrupt or truncated archive ({type(exc).__name__}: {exc})") from None
