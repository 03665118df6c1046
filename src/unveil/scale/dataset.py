"""Explain a whole dataset in shards, resumably, on this machine or on a Dask cluster.

``explain_dataset(model, data, method=..., out="run/")`` writes one ``shard-KKKKK.npz``
:class:`~unveil.Explanation` per shard (and a Parquet table of attributions for tabular data
when pyarrow is installed) and a ``manifest.json`` updated atomically after every shard. A rerun
with the same configuration skips finished shards, so a crash loses at most the shard in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.explanation import Explanation, _jsonable
from ..core.model import as_model
from ..core.registry import get_method
from ..errors import InputError, OptionError
from ._shard_task import explain_shard
from .sources import Shard, describe_source, iter_shards

__all__ = ["DatasetRun", "explain_dataset"]

log = logging.getLogger(__name__)
_FORMAT = "unveil.run/1"


@dataclass
class DatasetRun:
    """A finished (or resumed) run: where it is, what it holds, and its summary."""

    out: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]

    def shards(self) -> Iterator[Explanation]:
        """The shard Explanations in row order."""
        for key in sorted(self.manifest["shards"]):
            yield Explanation.load(self.out / self.manifest["shards"][key]["file"])

    def values(self) -> np.ndarray:
        """All attributions concatenated in row order."""
        return np.concatenate([e.values for e in self.shards()])


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _write_parquet(path: Path, exp: Explanation, names: list[str] | None, start: int) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # the dist extra is optional; the npz shard is the record
        return
    vals = exp.values.reshape(len(exp), -1)
    names = names or [f"x{i}" for i in range(vals.shape[1])]
    cols: dict[str, Any] = {"row": np.arange(start, start + len(exp))}
    if exp.targets is not None:
        cols["target"] = exp.targets
    if exp.outputs is not None:
        cols["output"] = exp.outputs
    for i, n in enumerate(names):
        cols[f"attr:{n}"] = vals[:, i]
    pq.write_table(pa.table(cols), path.with_suffix(".tmp.parquet"))
    os.replace(path.with_suffix(".tmp.parquet"), path)


class _Writer:
    """Writes shards and keeps the manifest current."""

    def __init__(self, out: Path, manifest: dict[str, Any], names: list[str] | None) -> None:
        self.out, self.manifest, self.names = out, manifest, names

    def write(self, shard: Shard, exp: Explanation) -> None:
        key = f"{shard.index:05d}"
        file = f"shard-{key}.npz"
        exp.meta["rows"] = [shard.start, shard.stop]
        if shard.y is not None:
            exp.extras["labels"] = np.asarray(shard.y)
        if self.names is not None and exp.feature_names is None:
            exp.feature_names = self.names
        tmp = self.out / f".{file}.tmp.npz"
        exp.save(tmp)
        os.replace(tmp, self.out / file)
        if exp.inputs.ndim == 2:
            _write_parquet(self.out / f"shard-{key}.parquet", exp, self.names, shard.start)
        self.manifest["shards"][key] = {
            "file": file, "rows": [shard.start, shard.stop], "n_evals": exp.n_evals,
            "seconds": round(sum(exp.timings.values()), 4),
        }
        _atomic_write_json(self.out / "manifest.json", self.manifest)


def _open_run(out: Path, config: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    fresh = {"format": _FORMAT, "config": config, "config_hash": _config_hash(config), "shards": {}, "complete": False}
    if not path.exists() or overwrite:
        for f in out.glob("shard-*"):
            f.unlink()
        return fresh
    old = json.loads(path.read_text())
    if old.get("format") != _FORMAT or old.get("config_hash") != fresh["config_hash"]:
        raise InputError(
            f"{out} holds a run with another configuration (method, options, model or data); "
            "use a new folder, or overwrite=True to start again"
        )
    # a shard counts as finished only if its file is there too
    old["shards"] = {k: v for k, v in old["shards"].items() if (out / v["file"]).exists()}
    old["complete"] = False
    return old  # type: ignore[no-any-return]


def explain_dataset(
    model: Any,
    data: Any,
    *,
    method: str = "integrated_gradients",
    out: str | Path = "unveil-run",
    target: Any = "predicted",
    shard_size: int = 256,
    seed: int | None = 0,
    engine: Literal["local", "dask"] = "local",
    scheduler: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    label_column: str | None = None,
    **options: Any,
) -> DatasetRun:
    """Explain every row of ``data`` with ``method`` and write the results in shards.

    Parameters
    ----------
    data
        Tensor/array, DataFrame, torch Dataset or (unshuffled) DataLoader, CSV path, or a
        folder of images.
    shard_size
        Rows per shard: the unit that is written, resumed and sent to a worker.
    seed
        Base seed; shard ``k`` uses a seed derived from it and ``k``, so results do not depend
        on the engine or on which shards were resumed.
    engine, scheduler
        ``"local"``, or ``"dask"`` with ``scheduler`` a scheduler address, a
        ``distributed.Client``, or ``None`` for a ``LocalCluster`` (the ``dist`` extra).
    options
        The method's options as it declares them (``n_steps=``, ``baseline=`` ...; see
        ``uv.options(method)``); an unknown or ill-typed one raises
        :class:`~unveil.errors.OptionError` before any work.
    """
    info = get_method(method)
    info.split_options(options)  # an unknown or ill-typed option fails before any work
    if not isinstance(shard_size, int) or shard_size < 1:
        raise OptionError(f"shard_size must be a positive int, got {shard_size!r}")
    if engine not in ("local", "dask"):
        raise OptionError(f"engine must be 'local' or 'dask', got {engine!r}")
    out = Path(out)
    wrapped = as_model(model)
    config = {
        "method": info.name, "options": _jsonable(options), "target": _jsonable(target), "seed": seed,
        "shard_size": shard_size, "model": wrapped.fingerprint(), "data": describe_source(data),
    }
    manifest = _open_run(out, config, overwrite)
    done = {int(k) for k in manifest["shards"]}
    n_rows, names, shards = iter_shards(data, shard_size, skip=done, label_column=label_column)
    total = None if n_rows is None else -(-n_rows // shard_size)
    writer = _Writer(out, manifest, names)
    bar = tqdm(total=total, initial=len(done), disable=not progress, desc=f"unveil {info.name}", unit="shard")
    try:
        if engine == "local":
            for shard in shards:
                writer.write(shard, explain_shard(model, shard.x, info.name, _shard_target(target, shard), options, shard.index, seed))
                bar.update(1)
        else:
            from ._dask import run_on_dask

            run_on_dask(model, shards, info.name, target, options, seed, scheduler, writer, bar)
    finally:
        bar.close()
    manifest["complete"] = True
    manifest["n_rows"] = sum(v["rows"][1] - v["rows"][0] for v in manifest["shards"].values())
    from .summary import summarize

    summary = summarize(out, manifest)
    manifest["summary_file"] = "summary.json"
    _atomic_write_json(out / "manifest.json", manifest)
    return DatasetRun(out, manifest, summary)


def _shard_target(target: Any, shard: Shard) -> Any:
    """Per-row targets given for the whole dataset are cut to the shard's rows."""
    if isinstance(target, (list, tuple, np.ndarray, torch.Tensor)):
        return np.asarray(target)[shard.start : shard.stop]
    return target
