"""Whole datasets and real time (issue: scale).

- Dask throughput: the same IG run over digits test images on a LocalCluster with one worker
  and with two (one thread each), plus the per-task overhead (a task on a 1-row shard).
- Real time: 200 single-input calls on the zoo digits CNN with ``budget_ms=50``: the share that
  met the budget and the completeness gap reached.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ._common import Context, Row, w3


def _dask_rows(ctx: Context) -> list[Row]:
    import distributed

    from unveil.scale import explain_dataset

    model, _ = w3()
    from unveil.zoo import load_dataset

    x = load_dataset("digits_cnn").X_test[: 32 if ctx.quick else 256]
    rows = []
    times = {}
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            with tempfile.TemporaryDirectory() as d:
                explain_dataset(model, x[:8], out=Path(d) / "warm", method="integrated_gradients", n_steps=16,
                                shard_size=4, engine="dask", scheduler=client, progress=False)
                t0 = time.perf_counter()
                explain_dataset(model, x, out=Path(d) / "run", method="integrated_gradients", n_steps=16,
                                shard_size=16, engine="dask", scheduler=client, progress=False)
                times[workers] = time.perf_counter() - t0
                t0 = time.perf_counter()
                n_tiny = 8
                explain_dataset(model, x[:n_tiny], out=Path(d) / "tiny", method="saliency", shard_size=1,
                                engine="dask", scheduler=client, progress=False)
                per_task = (time.perf_counter() - t0) / n_tiny
        rows.append(Row("scale", f"IG-16 dask {workers} worker(s)", f"W3 {len(x)} images", times[workers],
                        note=f"{len(x) / times[workers]:.0f} img/s; per-task overhead {per_task * 1e3:.0f} ms"))
    rows[-1].note += f"; speed-up 2 vs 1 worker {times[1] / times[2]:.2f}x"
    return rows


def _budget_rows(ctx: Context) -> list[Row]:
    from unveil.scale import Explainer

    model, x = w3()
    ex = Explainer(model, "integrated_gradients", budget_ms=50)
    n = 20 if ctx.quick else 200
    met, gaps, lat, steps = 0, [], [], []
    t0 = time.perf_counter()
    for i in range(n):
        e = ex(x[i % len(x)][None])
        b = e.meta["budget"]
        met += bool(b["met"])
        gaps.append(b["quality"].get("completeness_gap", np.nan))
        lat.append(b["latency_ms"])
        steps.append(b["units"])
    total = time.perf_counter() - t0
    return [Row("scale", "IG budget_ms=50, single inputs", f"W3 x{n}", total / n,
                note=(f"{met / n:.0%} met 50 ms; median latency {np.median(lat):.1f} ms; median steps "
                      f"{int(np.median(steps))}; median completeness gap {np.nanmedian(gaps):.2%}"))]


def run(ctx: Context) -> list[Row]:
    return _budget_rows(ctx) + _dask_rows(ctx)
