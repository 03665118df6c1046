"""Explain a whole dataset in shards, resumably, on this machine or on a Dask cluster.

``explain_dataset(model, data, method=..., out="run/")`` writes one ``shard-KKKKK.npz``
:class:`~unveil.Explanation` per shard (and a Parquet table of attributions for tabular data
when pyarrow is installed) and a ``manifest.json`` (with a journal that records each shard as it
is written, durably, merged into the manifest at the end; see ``_run``). A rerun
with the same configuration skips finished shards, so a crash loses at most the shard in flight.
A rerun never mixes inputs: it refuses another configuration (tensor options and targets are
compared by content) and data whose finished rows hash differently, and it recomputes, with a
warning, any shard whose file is truncated or damaged (see ``_run``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.explanation import Explanation
from ..core.model import as_model
from ..core.registry import get_method
from ..errors import InputError, OptionError
from ._run import InputCheck, Writer, data_digest, open_run
from ._shard_task import explain_shard
from ._store import fingerprint
from .sources import _shard_target, describe_source, iter_shards

__all__ = ["DatasetRun", "explain_dataset"]

log = logging.getLogger(__name__)


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
    overwrite
        Discard a run already in ``out`` and start again. Without it, a run of the same
        configuration resumes; one of another configuration, or whose finished rows no longer
        hash as they did, is refused with :class:`~unveil.errors.InputError`.
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
        "method": info.name, "options": fingerprint(options), "target": _target_fingerprint(target), "seed": seed,
        "shard_size": shard_size, "model": wrapped.fingerprint(), "data": describe_source(data),
        "label_column": label_column,
    }
    manifest = open_run(out, config, overwrite)
    done = {int(k) for k in manifest["shards"]}
    check = InputCheck(out, manifest)
    n_rows, names, shards = iter_shards(data, shard_size, skip=done, label_column=label_column, check=check)
    check.rows(n_rows, shard_size)
    if manifest.setdefault("columns", names) != names:
        raise InputError(f"the data's columns {names} differ from the run's {manifest['columns']}. Pass a new out= "
                         f"folder to keep the run in {out}, or overwrite=True to discard it and start again.")
    total = None if n_rows is None else -(-n_rows // shard_size)
    writer = Writer(out, manifest, names)
    bar = tqdm(total=total, initial=len(done), disable=not progress, desc=f"unveil {info.name}", unit="shard")
    try:
        if engine == "local":
            for shard in shards:
                # the wrapped model: its fingerprint (every parameter hashed) is computed once a run
                exp = explain_shard(wrapped, shard.x, info.name, _shard_target(target, shard), options, shard.index, seed)
                writer.write(shard, exp)
                bar.update(1)
        else:
            from ._dask import run_on_dask

            run_on_dask(model, shards, info.name, target, options, seed, scheduler, writer, bar)
    finally:
        bar.close()
        writer.close()
    check.finish()
    manifest["complete"] = True
    manifest["n_rows"] = sum(v["rows"][1] - v["rows"][0] for v in manifest["shards"].values())
    manifest["data_digest"] = data_digest(manifest)
    from .summary import summarize

    summary = summarize(out, manifest)
    manifest["summary_file"] = "summary.json"
    writer.save()
    return DatasetRun(out, manifest, summary)


def _target_fingerprint(target: Any) -> Any:
    """Per-row targets by content (as one array, whatever container holds them)."""
    if isinstance(target, torch.Tensor):
        return fingerprint(target.numpy(force=True))
    if isinstance(target, (list, tuple, np.ndarray)):
        return fingerprint(np.asarray(target))
    return fingerprint(target)
