"""The Dask engine of :func:`~unveil.scale.explain_dataset` (the ``dist`` extra)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import require
from ._shard_task import explain_shard_packed
from .sources import Shard, _shard_target


def run_on_dask(model: Any, shards: Iterator[Shard], method: str, target: Any, options: dict[str, Any],
                seed: int | None, scheduler: Any, writer: Any, bar: Any) -> None:
    """Send the model to every worker once, then one task per shard; write results as they come.

    At most two tasks per worker thread are in flight, so memory stays bounded on long runs.
    """
    distributed = require("distributed", "dist")
    own: list[Any] = []
    if scheduler is None:
        cluster = distributed.LocalCluster(  # type: ignore[attr-defined]
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        own.append(cluster)
        client = distributed.Client(cluster)  # type: ignore[attr-defined]
        own.insert(0, client)
    elif isinstance(scheduler, str):
        client = distributed.Client(scheduler)  # type: ignore[attr-defined]
        own.append(client)
    else:
        client = scheduler
    try:
        import uuid

        import cloudpickle

        # One future for the (token, bytes) pair. A bare tuple would be scattered element-wise,
        # and hash=True would reuse the key of an earlier run's bytes that may be mid-release.
        [model_f] = client.scatter([(uuid.uuid4().hex, cloudpickle.dumps(model))], broadcast=True, hash=False)
        limit = 2 * max(1, sum(client.nthreads().values()))
        pending: dict[Any, Shard] = {}
        ac = distributed.as_completed()  # type: ignore[attr-defined]

        def drain(until: int) -> None:
            while len(pending) > until:
                fut = next(ac)
                shard = pending.pop(fut)
                writer.write(shard, fut.result())
                bar.update(1)

        for shard in shards:
            fut = client.submit(
                explain_shard_packed, model_f, shard.x, method, _shard_target(target, shard), options,
                shard.index, seed, 1, pure=False,
            )
            pending[fut] = shard
            ac.add(fut)
            drain(limit)
        drain(0)
    finally:
        for obj in own:
            obj.close()
