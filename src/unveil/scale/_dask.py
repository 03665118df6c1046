"""The Dask engine of :func:`~unveil.scale.explain_dataset` (the ``dist`` extra).

Where a worker's time went, and what keeps it on the shards:

* the model travels once per run as cloudpickle bytes (one broadcast future) and is unpickled
  once per worker process, under the digest of its bytes, so a second run of the same model on
  the same cluster reuses the worker's copy, its prepared copies and its chunk-size probe;
* torch's thread count and glibc's allocator thresholds are set once per worker process (see
  ``_shard_task``): with Dask's ``MALLOC_TRIM_THRESHOLD_`` every autograd buffer was a fresh
  ``mmap``, which made a shard 2-3x slower in a worker than in the driver;
* workers compress each shard's ``.npz`` file, so the driver only writes bytes (compressing
  took it 10-25 ms a shard, CPU the workers then lacked on a machine they share with it);
* at most two tasks per worker thread are in flight, so workers never wait for the driver
  while it writes a shard, and memory stays bounded on long runs.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

from ..errors import require
from ._shard_task import explain_shard_packed
from .sources import Shard, _shard_target


def _client(distributed: Any, scheduler: Any) -> tuple[Any, list[Any]]:
    """The client for ``scheduler`` and what this run opened (to close at the end)."""
    if scheduler is None:
        # any free port for the HTTP server: with None it still tries 8787 and warns when that is taken
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = distributed.Client(cluster)
        return client, [client, cluster]
    if isinstance(scheduler, str):
        client = distributed.Client(scheduler)
        return client, [client]
    return scheduler, []


def run_on_dask(model: Any, shards: Iterator[Shard], method: str, target: Any, options: dict[str, Any],
                seed: int | None, scheduler: Any, writer: Any, bar: Any, threads: int | None = 1) -> None:
    """Send the model to every worker once, then one task per shard; write results as they come.

    ``threads`` is torch's thread count in each worker (``None`` leaves it as the worker has it).
    """
    distributed = require("distributed", "dist")
    client, own = _client(distributed, scheduler)
    try:
        import cloudpickle

        blob = cloudpickle.dumps(model)
        token = hashlib.blake2b(blob, digest_size=16).hexdigest()
        # One future for the (token, bytes) pair. A bare tuple would be scattered element-wise,
        # and hash=True would reuse the key of an earlier run's bytes that may be mid-release:
        # the future's key is new each run, the token (what workers cache by) is the content.
        [model_f] = client.scatter([(token, blob)], broadcast=True, hash=False)
        limit = 2 * max(1, sum(client.nthreads().values()))
        pending: dict[Any, Shard] = {}
        ac = distributed.as_completed()  # type: ignore[attr-defined]

        def drain(until: int) -> None:
            while len(pending) > until:
                fut = next(ac)
                shard = pending.pop(fut)
                writer.write(shard, *fut.result())
                bar.update(1)

        for shard in shards:
            fut = client.submit(
                explain_shard_packed, model_f, shard.x, method, _shard_target(target, shard), options,
                shard.index, seed, threads=threads, rows=(shard.start, shard.stop, shard.y, writer.names),
                pure=False, key=f"unveil-shard-{shard.index}-{uuid.uuid4().hex}",
            )
            pending[fut] = shard
            ac.add(fut)
            drain(limit)
        drain(0)
    finally:
        for obj in own:
            obj.close()
