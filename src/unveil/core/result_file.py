"""One ``.npz`` file per result: numeric arrays plus JSON metadata, never pickled.

The counterfactual, concept and training-data results save through :func:`write_result` and
load through :func:`read_result`, so every such file is read the same guarded way: no pickle,
numbers only, and a ``kind`` in the metadata that must match what the caller expects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .explanation import jsonable

__all__ = ["read_result", "write_result"]

_META = "__meta__"


def write_result(path: str | Path, kind: str, meta: dict[str, Any], arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` (numbers only) and ``meta`` (JSON, with ``kind``) to ``path``; ``.npz``
    is appended when the name lacks it. Returns the path written."""
    p = Path(path)
    if p.suffix != ".npz":
        p = p.with_name(p.name + ".npz")
    out = {k: np.asarray(a) for k, a in arrays.items()}
    for k, a in out.items():
        if a.dtype.kind not in "biuf":
            raise InputError(f"cannot save array {k!r} of dtype {a.dtype}: only numbers are saved")
    text = json.dumps({**jsonable(meta), "kind": kind})
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as fh:
        np.savez_compressed(fh, **{_META: np.frombuffer(text.encode(), dtype=np.uint8)}, **out)  # type: ignore[arg-type]  # numpy's stub: kwargs are arrays
    return p


def read_result(path: str | Path, kind: str, *, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays :func:`write_result` wrote for a result of ``kind``.

    ``what`` names the file in errors ("an unveil counterfactuals file"); anything else — not
    an ``.npz``, no readable metadata, another kind, non-numeric arrays — is an
    :class:`~unveil.errors.InputError` (a missing file stays ``FileNotFoundError``).
    """
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot load {path}: not {what} ({exc})") from None
    raw = arrays.pop(_META, None)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8")) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        found = meta.get("kind") if isinstance(meta, dict) else "no readable metadata"
        raise InputError(f"cannot load {path}: not {what} (found {found!r}); load it with the matching function")
    bad = [k for k, a in arrays.items() if a.dtype.kind not in "biuf"]
    if bad:
        raise InputError(f"cannot load {path}: arrays not numeric ({bad})")
    return meta, arrays
