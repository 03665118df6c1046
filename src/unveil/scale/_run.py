"""The run folder of :func:`~unveil.scale.explain_dataset`: its manifest, its shards, and the
checks that keep a resumed run from mixing two inputs.

``manifest.json`` holds the run's configuration (method, options with tensors by content,
targets by content, seed, shard size, model fingerprint, a description of the source) and one
entry per finished shard: its rows, the digest of its input rows (and labels), and the size and
checksum of each file written for it. A resume

* refuses another configuration, naming what differs;
* trusts a shard only if its files have the recorded size and checksum, and recomputes it with a
  warning otherwise;
* reads the rows of every finished shard again as the source yields them and refuses the run if
  they no longer hash to the recorded digest. Rows nobody explained yet may have changed: every
  shard kept matches the data as it is now, so the finished run is that of a fresh run on it.

So a run only ever ends ``complete`` with every shard computed from the same data.

While a run is under way, ``manifest.json`` holds its configuration and the shards finished
before it started; each shard finished since is one JSON line appended to ``manifest.journal``
(written and fsynced after the shard's files are fsynced and moved into place), so a shard costs
one small append instead of rewriting and syncing the whole manifest. The finished run's
``manifest.json`` names every shard and the journal is removed. A reader merges the two with
:func:`read_manifest`; a torn last line (a crash mid-append) is ignored, and the shard it named
is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..errors import InputError
from ._store import check_file, commit, fsync_dir, new_hash, write_json
from .sources import Shard

__all__ = ["FORMAT", "JOURNAL", "InputCheck", "Writer", "annotate", "data_digest", "open_run", "read_manifest",
           "shard_file"]

FORMAT = "unveil.run/2"
JOURNAL = "manifest.journal"


def _replay(path: Path, manifest: dict[str, Any]) -> None:
    """Apply the journal's shard entries of this run (same ``run_id``) to ``manifest``, in order.

    Only whole lines count: a line cut short by a crash, or one that does not parse, names no
    shard (that shard is computed again).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    for line in raw.split(b"\n")[:-1]:  # the part after the last newline is unfinished
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("run_id") == manifest.get("run_id") and "shard" in entry:
            key = entry.pop("shard")
            entry.pop("run_id")
            manifest.setdefault("shards", {})[str(key)] = entry


def read_manifest(out: Path) -> dict[str, Any]:
    """The run's manifest as it stands: ``manifest.json`` with the journal's shards applied.

    Raises ``OSError`` or ``ValueError`` when ``manifest.json`` is missing or unreadable.
    """
    manifest = json.loads((out / "manifest.json").read_text())
    if not isinstance(manifest, dict):
        raise ValueError("not a JSON object")
    _replay(out / JOURNAL, manifest)
    return manifest


def _what_to_do(out: Path) -> str:
    return f"Pass a new out= folder to keep the run in {out}, or overwrite=True to discard it and start again."


def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


_UNSET = "<not set>"


def _show(v: Any) -> str:
    if v is _UNSET:
        return "not set"
    if isinstance(v, dict) and "blake2b" in v:
        return f"{v['array']} {v['dtype']} shape {tuple(v['shape'])} #{v['blake2b'][:10]}"
    return repr(v)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two run configurations, in words."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "options":
            a, b = a or {}, b or {}
            for name in sorted(set(a) | set(b)):
                va, vb = a.get(name, _UNSET), b.get(name, _UNSET)
                if va != vb:
                    diffs.append(f"option {name!r} ({_show(va)} in the run, {_show(vb)} now)")
        elif key == "target":
            diffs.append(f"targets ({_show(a)} in the run, {_show(b)} now)")
        elif key == "model":
            diffs.append(f"model parameters (fingerprint {a} in the run, {b} now)")
        else:
            diffs.append(f"{key} ({_show(a)} in the run, {_show(b)} now)")
    return diffs


def _trusted(out: Path, key: str, entry: dict[str, Any]) -> bool:
    """Whether every file of a finished shard is whole; warns and returns False otherwise."""
    for name, record in entry.get("files", {}).items():
        problem = check_file(out / name, record)
        if problem is not None:
            a, b = entry["rows"]
            # stacklevel: _trusted <- open_run <- explain_dataset <- the user's call
            warnings.warn(f"{out / name} {problem}; shard {key} (rows {a}..{b - 1}) will be recomputed", stacklevel=4)
            return False
    return bool(entry.get("files"))


def open_run(out: Path, config: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The manifest to continue: a fresh one, or the folder's with only its trusted shards.

    Raises :class:`InputError` if the folder holds a run of another configuration or a manifest
    that cannot be read. Nothing in the folder is changed before the checks pass.
    """
    path = out / "manifest.json"
    fresh = {"format": FORMAT, "config": config, "config_hash": _config_hash(config), "shards": {},
             "complete": False, "run_id": uuid.uuid4().hex}
    if overwrite or not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # first, so an interrupted overwrite leaves no run to resume
        for f in [out / JOURNAL, *out.glob("shard-*"), *out.glob(".shard-*.tmp*")]:
            f.unlink(missing_ok=True)
        return fresh
    try:
        old = read_manifest(out)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read ({exc}). {_what_to_do(out)}") from None
    if old.get("format") != FORMAT:
        raise InputError(f"{out} holds a run of format {old.get('format')!r}, not {FORMAT!r} (written by another "
                         f"unveil version). {_what_to_do(out)}")
    if old.get("config_hash") != fresh["config_hash"]:
        diffs = _differences(old.get("config", {}), config) or ["the configuration hash"]
        raise InputError(f"{out} holds a run with another configuration; what differs: {'; '.join(diffs)}. "
                         f"{_what_to_do(out)}")
    for f in out.glob(".shard-*.tmp*"):  # a write that never finished
        f.unlink()
    kept = {}
    for k, v in old.get("shards", {}).items():
        if _trusted(out, k, v):
            kept[k] = v
    old["shards"] = kept
    old["complete"] = False
    return old  # type: ignore[no-any-return]


class InputCheck:
    """Checks the rows of finished shards against their recorded digests as they are read again."""

    def __init__(self, out: Path, manifest: dict[str, Any]) -> None:
        self.out = out
        self.expected = {int(k): v for k, v in manifest["shards"].items()}
        self.seen: set[int] = set()

    def _refuse(self, what: str) -> InputError:
        return InputError(f"{what}: the data changed since the run in {self.out} began. {_what_to_do(self.out)}")

    def rows(self, n_rows: int | None, shard_size: int) -> None:
        """With the source's length known up front, refuse at once a run that covered other rows."""
        if n_rows is None:
            return
        for k, entry in sorted(self.expected.items()):
            rows = [k * shard_size, min((k + 1) * shard_size, n_rows)]
            if entry["rows"] != rows:
                a, b = entry["rows"]
                raise self._refuse(f"the data has {n_rows} rows, but shard {k:05d} of the run explained rows {a}..{b - 1}")

    def __call__(self, index: int, start: int, stop: int, digest: str) -> None:
        """Called by the source for each finished shard it reads again."""
        entry = self.expected.get(index)
        if entry is None:
            return
        self.seen.add(index)
        if entry["rows"] != [start, stop]:
            a, b = entry["rows"]
            raise self._refuse(f"shard {index:05d} now holds rows {start}..{stop - 1}, the run explained rows {a}..{b - 1}")
        if entry["input"] != digest:
            raise self._refuse(f"data rows {start}..{stop - 1} (shard {index:05d}) differ from the rows the run explained")

    def finish(self) -> None:
        """After the source is exhausted: every finished shard must have been read again."""
        missing = sorted(set(self.expected) - self.seen)
        if missing:
            a, b = self.expected[missing[0]]["rows"]
            raise self._refuse(f"the data ended before rows {a}..{b - 1} (shard {missing[0]:05d}) that the run explained")


def _write_parquet(tmp: Path, exp: Explanation, names: list[str] | None, start: int) -> bool:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # the dist extra is optional; the npz shard is the record
        return False
    vals = exp.values.reshape(len(exp), -1)
    names = names or [f"x{i}" for i in range(vals.shape[1])]
    cols: dict[str, Any] = {"row": np.arange(start, start + len(exp))}
    if exp.targets is not None:
        cols["target"] = exp.targets
    if exp.outputs is not None:
        cols["output"] = exp.outputs
    for i, n in enumerate(names):
        cols[f"attr:{n}"] = vals[:, i]
    pq.write_table(pa.table(cols), tmp)
    return True


def annotate(exp: Explanation, start: int, stop: int, y: Any, names: list[str] | None) -> None:
    """What a shard's Explanation records besides the method's output: its rows, the source's
    labels and feature names."""
    exp.meta["rows"] = [start, stop]
    if y is not None:
        exp.extras["labels"] = np.asarray(y)
    if names is not None and exp.feature_names is None:
        exp.feature_names = names


def shard_file(exp: Explanation) -> bytes:
    """The bytes of ``exp``'s ``.npz`` file (written to a private temporary folder and read)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="unveil-shard-") as d:
        return exp.save(Path(d) / "shard.npz").read_bytes()


class Writer:
    """Writes shards durably and keeps the manifest current (see the module's docstring).

    Per shard: its files are written under temporary names, fsynced and moved into place, then
    one line naming them (with their sizes and checksums) is appended to the journal and
    fsynced. The folder is fsynced once, before the final manifest: a shard whose move did not
    reach the disk before a power cut is missing on resume and is computed again, like a
    damaged one. Call :meth:`save` at the end and :meth:`close` in any case.
    """

    def __init__(self, out: Path, manifest: dict[str, Any], names: list[str] | None) -> None:
        self.out, self.manifest, self.names = out, manifest, names
        self._journal: Any = None
        if "run_id" not in manifest or not (out / "manifest.json").exists():
            # a fresh run (its configuration, before any shard), or one begun by an older version
            manifest.setdefault("run_id", uuid.uuid4().hex)
            write_json(out / "manifest.json", manifest)

    def write(self, shard: Shard, exp: Explanation, npz: bytes | None = None) -> None:
        """Write ``exp`` as shard ``shard.index``; ``npz``, when given, is the file already made
        by :func:`shard_file` (a Dask worker compresses it, not the driver)."""
        key = f"{shard.index:05d}"
        file = f"shard-{key}.npz"
        annotate(exp, shard.start, shard.stop, shard.y, self.names)
        tmp = self.out / f".{file}.tmp.npz"
        if npz is None:
            exp.save(tmp)
        else:
            tmp.write_bytes(npz)
        files = {file: commit(tmp, self.out / file, sync_dir=False)}
        if exp.inputs.ndim == 2:
            tmp = self.out / f".shard-{key}.parquet.tmp"
            if _write_parquet(tmp, exp, self.names, shard.start):
                files[f"shard-{key}.parquet"] = commit(tmp, self.out / f"shard-{key}.parquet", sync_dir=False)
        entry = {
            "file": file, "rows": [shard.start, shard.stop], "input": shard.digest, "files": files,
            "n_evals": exp.n_evals, "seconds": round(sum(exp.timings.values()), 4),
        }
        self._append({"shard": key, "run_id": self.manifest["run_id"], **entry})
        self.manifest["shards"][key] = entry

    def _append(self, record: dict[str, Any]) -> None:
        if self._journal is None:
            path = self.out / JOURNAL
            new = not path.exists()
            self._journal = open(path, "ab")  # noqa: SIM115  # kept open for the run; closed by close()
            if new:
                fsync_dir(self.out)  # the journal itself is in the folder for good
        self._journal.write(json.dumps(record).encode() + b"\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def save(self) -> None:
        """Write the whole manifest (every shard's files first made durable) and drop the journal."""
        self.close()
        fsync_dir(self.out)  # every shard's move is on disk before the manifest names it
        write_json(self.out / "manifest.json", self.manifest)
        (self.out / JOURNAL).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the journal (what it holds stays: a later call resumes from it)."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def data_digest(manifest: dict[str, Any]) -> str:
    """The digest of the whole input, from the digests of its shards in row order."""
    h = new_hash()
    for key in sorted(manifest["shards"]):
        h.update(manifest["shards"][key]["input"].encode())
    return str(h.hexdigest())
