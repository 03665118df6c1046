"""Training-set features for TRAK and TracIn in resumable shards, on this machine or on Dask.

``training_features(model, (X, y), method="trak", out="feats/")`` computes, shard by shard, the
projected per-example gradients of the training rows under every model of the ensemble (or
every checkpoint, for TracIn) and writes one ``shard-KKKKK.npz`` per shard, with the run folder,
manifest, journal and resume checks of :func:`~unveil.scale.explain_dataset` (see ``_run``): a
rerun with the same configuration skips finished shards, refuses another configuration or
changed rows, and recomputes a damaged shard. Each shard's features depend only on its rows,
the model states and the seeded projection, so a killed and resumed run gives exactly the
features of one uninterrupted run.

:meth:`FeatureRun.trak_features` / :meth:`FeatureRun.tracin_features` read them back for
``training_influence(..., method="trak"/"tracin", train_features=...)``.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data_attribution import choose_parameters
from ..data_attribution.projection import (
    Checkpoint,
    Projector,
    checkpoint_digest,
    load_checkpoints,
    projected_gradients,
)
from ..data_attribution.trak import TrakFeatures, trak_features
from ..errors import InputError, OptionError, require
from ._run import InputCheck, Writer, data_digest, open_run
from ._store import commit
from .sources import Shard, _from_indexable, describe_source, iter_shards

__all__ = ["FeatureRun", "feature_shard", "training_features"]


@dataclass
class FeatureRun:
    """A finished feature run: its folder and manifest."""

    out: Path
    manifest: dict[str, Any]

    def _arrays(self) -> Iterator[dict[str, np.ndarray]]:
        for key in sorted(self.manifest["shards"]):
            with np.load(self.out / self.manifest["shards"][key]["file"], allow_pickle=False) as z:
                yield {k: z[k] for k in z.files}

    def arrays(self) -> dict[str, np.ndarray]:
        """``phi [S, n, k]``, ``q [S, n]`` (TRAK only) and ``labels [n]``, in row order."""
        parts = list(self._arrays())
        out = {"phi": np.concatenate([p["phi"] for p in parts], axis=1),
               "labels": np.concatenate([p["labels"] for p in parts])}
        if "q" in parts[0]:
            out["q"] = np.concatenate([p["q"] for p in parts], axis=1)
        return out

    def trak_features(self) -> TrakFeatures:
        """The features as ``train_features=`` for ``method="trak"``."""
        cfg = self.manifest["config"]
        if cfg["method"] != "trak":
            raise InputError(f"this run holds {cfg['method']} features, not TRAK's")
        a = self.arrays()
        keys = ("proj_dim", "projection", "seed", "params", "n_models", "checkpoints")
        return TrakFeatures(torch.from_numpy(a["phi"]), torch.from_numpy(a["q"]), {k: cfg[k] for k in keys})

    def tracin_features(self) -> torch.Tensor:
        """The features as ``train_features=`` for ``method="tracin"`` (``[T, n, k]``)."""
        if self.manifest["config"]["method"] != "tracin":
            raise InputError(f"this run holds {self.manifest['config']['method']} features, not TracIn's")
        return torch.from_numpy(self.arrays()["phi"])


def feature_shard(model: nn.Module, ckpts: list[Checkpoint], method: str, x: torch.Tensor, y: torch.Tensor,
                  settings: dict[str, Any]) -> dict[str, np.ndarray]:
    """The features of one shard's rows under every model state: the unit of work of both engines."""
    was = model.training
    model.eval()
    try:
        if method == "trak":
            parts = [trak_features(model, ck, s, x, y, proj_dim=settings["proj_dim"],
                                   projection=settings["projection"], seed=settings["seed"],
                                   params=settings["params"], batch_size=settings["batch_size"])
                     for s, ck in enumerate(ckpts)]
            return {"phi": torch.stack([p[0] for p in parts]).numpy(), "q": torch.stack([p[1] for p in parts]).numpy()}
        feats = []
        for t, ck in enumerate(ckpts):
            proj = Projector(settings["proj_dim"], settings["projection"], seed=int(settings["seed"]) * 7919 + t)
            feats.append(projected_gradients(model, ck, x, y, proj, params=settings["params"], loss=settings["loss"],
                                             batch_size=settings["batch_size"], scale=float(ck.lr) ** 0.5))
        return {"phi": torch.stack(feats).numpy()}
    finally:
        model.train(was)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub takes allow_pickle first
    return buf.getvalue()


class _FeatureWriter(Writer):
    """The run's writer for feature shards (``.npz`` of arrays, not Explanations)."""

    def write_arrays(self, shard: Shard, arrays: dict[str, np.ndarray]) -> None:
        key = f"{shard.index:05d}"
        file = f"shard-{key}.npz"
        tmp = self.out / f".{file}.tmp.npz"
        tmp.write_bytes(_npz({**arrays, "labels": np.asarray(shard.y), "rows": np.array([shard.start, shard.stop])}))
        files = {file: commit(tmp, self.out / file, sync_dir=False)}
        entry = {"file": file, "rows": [shard.start, shard.stop], "input": shard.digest, "files": files}
        self._append({"shard": key, "run_id": self.manifest["run_id"], **entry})
        self.manifest["shards"][key] = entry


def _shards(train: Any, size: int, skip: set[int], check: InputCheck,
            label_column: str | None) -> tuple[int | None, Iterator[Shard]]:
    if isinstance(train, (tuple, list)) and len(train) == 2:
        x = torch.as_tensor(np.asarray(train[0]) if not isinstance(train[0], torch.Tensor) else train[0])
        y = np.asarray(train[1].numpy(force=True) if isinstance(train[1], torch.Tensor) else train[1])
        if len(x) != len(y):
            raise InputError(f"the training rows ({len(x)}) and labels ({len(y)}) differ in number; pass one label per row")
        return len(x), _from_indexable(lambda a, b: (x[a:b], y[a:b]), len(x), size, skip, check)
    n, _, shards = iter_shards(train, size, skip=skip, label_column=label_column, check=check)
    return n, shards


def training_features(
    model: nn.Module,
    train: Any,
    *,
    method: Literal["trak", "tracin"] = "trak",
    out: str | Path = "unveil-features",
    checkpoints: Any = None,
    lrs: Any = None,
    proj_dim: int | None = 512,
    projection: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int = 0,
    params: Any = "all",
    loss: str = "auto",
    shard_size: int = 1024,
    batch_size: Any = "auto",
    engine: Literal["local", "dask"] = "local",
    scheduler: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    label_column: str | None = None,
) -> FeatureRun:
    """Project the training rows' gradients for TRAK or TracIn in resumable shards.

    ``train`` is ``(X, y)``, a DataFrame with ``label_column``, a CSV path with it, or a torch
    ``Dataset`` of ``(x, y)`` items. ``checkpoints`` (and ``lrs`` for TracIn) are the model
    states as for the estimators; the settings must match those given to the estimator later.
    ``engine="dask"`` sends shards to a Dask cluster (``scheduler``: address, Client or
    ``None`` for a local cluster). See :func:`~unveil.scale.explain_dataset` for ``out``,
    ``overwrite`` and resuming.
    """
    if method not in ("trak", "tracin"):
        raise OptionError(f"method must be 'trak' or 'tracin', got {method!r}")
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise OptionError(f"shard_size must be a positive int, got {shard_size!r}")
    if engine not in ("local", "dask"):
        raise OptionError(f"engine must be 'local' or 'dask', got {engine!r}")
    if not isinstance(loss, str):
        raise OptionError("a dataset run takes loss by name ('auto', 'cross_entropy' or 'mse')")
    Projector(proj_dim, projection)  # checks the projection settings before any work
    ckpts = load_checkpoints(model, checkpoints, None if method == "trak" else lrs)
    names = choose_parameters(model, params)
    settings = {"proj_dim": proj_dim, "projection": projection, "seed": int(seed), "params": names,
                "loss": loss, "batch_size": batch_size}
    out = Path(out)
    config = {"kind": "training_features", "method": method, "proj_dim": proj_dim, "projection": projection,
              "seed": int(seed), "params": names, "loss": loss, "n_models": len(ckpts),
              "checkpoints": [checkpoint_digest(c) for c in ckpts], "shard_size": shard_size,
              "data": describe_source(train[0] if isinstance(train, (tuple, list)) else train),
              "label_column": label_column}
    manifest = open_run(out, config, overwrite)
    done = {int(k) for k in manifest["shards"]}
    check = InputCheck(out, manifest)
    n_rows, shards = _shards(train, shard_size, done, check, label_column)
    check.rows(n_rows, shard_size)
    total = None if n_rows is None else -(-n_rows // shard_size)
    writer = _FeatureWriter(out, manifest, None)
    bar = tqdm(total=total, initial=len(done), disable=not progress, desc=f"unveil {method} features", unit="shard")

    def labelled(shard: Shard) -> Shard:
        if shard.y is None:
            raise InputError("the training data have no labels; pass (X, y), or a table with label_column=")
        return shard

    try:
        if engine == "local":
            for shard in shards:
                shard = labelled(shard)
                arrays = feature_shard(model, ckpts, method, shard.x, torch.as_tensor(shard.y), settings)
                writer.write_arrays(shard, arrays)
                bar.update(1)
        else:
            _run_on_dask(model, ckpts, method, settings, (labelled(s) for s in shards), scheduler, writer, bar)
    finally:
        bar.close()
        writer.close()
    check.finish()
    manifest["complete"] = True
    manifest["n_rows"] = sum(v["rows"][1] - v["rows"][0] for v in manifest["shards"].values())
    manifest["data_digest"] = data_digest(manifest)
    writer.save()
    return FeatureRun(out, manifest)


# -- Dask -----------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _feature_shard_packed(packed: tuple[str, bytes], method: str, settings: dict[str, Any], x: torch.Tensor,
                          y: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`feature_shard` in a worker: the model and its states are unpickled once per token."""
    token, blob = packed
    if token not in _WORKER:
        import cloudpickle

        _WORKER.clear()
        _WORKER[token] = cloudpickle.loads(blob)
        torch.set_num_threads(1)
    model, ckpts = _WORKER[token]
    return feature_shard(model, ckpts, method, x, torch.as_tensor(y), settings)


def _run_on_dask(model: nn.Module, ckpts: list[Checkpoint], method: str, settings: dict[str, Any],
                 shards: Iterator[Shard], scheduler: Any, writer: _FeatureWriter, bar: Any) -> None:
    distributed = require("distributed", "dist")
    from ._dask import _client

    client, own = _client(distributed, scheduler)
    try:
        import cloudpickle

        blob = cloudpickle.dumps((model, ckpts))
        token = hashlib.blake2b(blob, digest_size=16).hexdigest()
        [packed] = client.scatter([(token, blob)], broadcast=True, hash=False)
        limit = 2 * max(1, sum(client.nthreads().values()))
        pending: dict[Any, Shard] = {}
        ac = distributed.as_completed()  # type: ignore[attr-defined]

        def drain(until: int) -> None:
            while len(pending) > until:
                fut = next(ac)
                writer.write_arrays(pending.pop(fut), fut.result())
                bar.update(1)

        for shard in shards:
            fut = client.submit(_feature_shard_packed, packed, method, settings, shard.x, shard.y, pure=False,
                                key=f"unveil-features-{shard.index}-{uuid.uuid4().hex}")
            pending[fut] = shard
            ac.add(fut)
            drain(limit)
        drain(0)
    finally:
        for obj in own:
            obj.close()
