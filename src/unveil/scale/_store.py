"""Durable files and content digests for dataset runs.

A file of a run is first written under a temporary name in the run folder, flushed and
``os.fsync``-ed, then moved over its final name with ``os.replace`` (the folder is fsynced after
the move, or, for shards, once before the final manifest), so after a crash or a power loss the
final name holds either nothing, the old file or the whole new one. Its size and BLAKE2b
checksum go to the manifest, which is how a resume tells a good shard from a missing, truncated
or damaged one.

Digests of data are BLAKE2b over dtype, shape and raw bytes, fed piece by piece, so nothing
larger than one shard is ever held to compute them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["check_file", "commit", "digest_rows", "fingerprint", "fsync_dir", "new_hash", "update_array",
           "write_json"]

_BLOCK = 1 << 20


def new_hash() -> Any:
    """A fresh BLAKE2b (16-byte digest), the hash of every digest in a run."""
    return hashlib.blake2b(digest_size=16)


def update_array(h: Any, a: Any) -> None:
    """Feed a tensor's or array's dtype, shape and bytes into the hash ``h``."""
    if isinstance(a, torch.Tensor):
        dtype = str(a.dtype)
        try:
            arr = a.numpy(force=True)
        except TypeError:  # bfloat16 and friends have no numpy dtype; float32 holds them exactly
            arr = a.detach().cpu().float().numpy()
    else:
        arr = np.asarray(a)
        dtype = str(arr.dtype)
    h.update(f"{dtype}{tuple(arr.shape)}".encode())
    if arr.dtype == object:  # the bytes would be pointers: hash what the objects say they are
        for v in arr.reshape(-1).tolist():
            h.update(repr(v).encode() + b"\x1f")
    else:
        h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def digest_rows(x: Any, y: Any = None) -> str:
    """The digest of a shard's inputs (and labels, when the source has them)."""
    h = new_hash()
    update_array(h, x)
    if y is not None:
        h.update(b"labels")
        update_array(h, y)
    return str(h.hexdigest())


def fingerprint(obj: Any) -> Any:
    """A JSON-safe stand-in for an option value: tensors and arrays by their content.

    Other objects are described by their ``repr`` with memory addresses removed, so the same
    function or composite passed again compares equal.
    """
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        h = new_hash()
        update_array(h, obj)
        return {"array": type(obj).__name__, "dtype": str(obj.dtype), "shape": list(obj.shape),
                "blake2b": h.hexdigest()}
    if isinstance(obj, dict):
        return {str(k): fingerprint(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [fingerprint(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (renames, new files) durable. POSIX only: Windows has no
    directory handles to sync, and its renames are journaled by NTFS."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, path: Path, *, sync_dir: bool = True) -> dict[str, Any]:
    """Fsync the finished temporary file ``tmp``, move it to ``path``, fsync the folder (leave
    that to the caller with ``sync_dir=False``, to sync several files' moves at once).

    Returns ``{"bytes": size, "blake2b": checksum}`` of what was written, for the manifest.
    """
    h, size = new_hash(), 0
    with open(tmp, "r+b") as fh:  # opened for writing: Windows cannot flush a read-only handle
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
            size += len(block)
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)
    return {"bytes": size, "blake2b": h.hexdigest()}


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` durably (temporary file, fsync, replace, fsync folder)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(json.dumps(obj, indent=1).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _checksum(path: Path) -> str:
    h = new_hash()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    return str(h.hexdigest())


def check_file(path: Path, record: dict[str, Any]) -> str | None:
    """What is wrong with ``path`` given its manifest record, or ``None`` if it can be trusted."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != record.get("bytes"):
        return f"has {size} bytes where the manifest says {record.get('bytes')} (truncated or damaged)"
    if _checksum(path) != record.get("blake2b"):
        return "does not match its checksum in the manifest (damaged)"
    return None
