"""Save and load concept results: numeric arrays and JSON metadata in one ``.npz``, no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.explanation import jsonable
from ..errors import InputError

__all__ = ["read", "write"]


def write(path: str | Path, kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``meta`` (JSON) to ``path`` (``.npz`` added if missing)."""
    p = Path(path)
    if p.suffix != ".npz":
        p = p.with_name(p.name + ".npz")
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise InputError(f"cannot save array {k!r} of dtype {a.dtype}: only numbers are saved")
    text = json.dumps({"kind": kind, **jsonable(meta)})
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as fh:
        np.savez_compressed(fh, __meta__=np.frombuffer(text.encode(), dtype=np.uint8), **arrays)  # type: ignore[arg-type]
    return p


def read(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays written by :func:`write` for a result of ``kind``."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: not an unveil concept result ({exc})") from exc
    raw = arrays.pop("__meta__", None)
    try:
        meta = json.loads(bytes(raw).decode()) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        got = meta.get("kind") if isinstance(meta, dict) else None
        raise InputError(f"{path} holds no {kind} result (found {got!r}); load it with the matching function")
    return meta, arrays
