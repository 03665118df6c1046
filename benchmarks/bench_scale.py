"""Whole datasets and real time (issue: scale).

- Dask against the local engine: IG-16 over 256 digits test images in 16 shards of 16, the local
  engine with torch at 1 thread against one Dask worker (1 thread, torch at 1 thread); then two
  workers against one. Medians of repeated runs after a warm-up run on each cluster. Also the
  end-to-end cost of one tiny task (saliency on 1-row shards, written and fsynced), on Dask and
  locally.
- Real time: 200 single-input calls on the zoo digits CNN with ``budget_ms=50`` (calibrated in
  the constructor with ``example=``), each timed by the caller around the whole call, first call
  included: the share within budget, the latency spread, the steps and the completeness gap; with
  torch's threads as the run sets them and with ``threads=1``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._common import Context, Row, load_info, w3

_IG: dict[str, Any] = dict(method="integrated_gradients", n_steps=16, progress=False)


def _timed_runs(run: Any, repeats: int) -> float:
    ts = []
    for k in range(repeats):
        t0 = time.perf_counter()
        run(k)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _dask_rows(ctx: Context) -> list[Row]:
    import distributed

    from unveil.scale import explain_dataset
    from unveil.zoo import load_dataset

    model, _ = w3()
    x = load_dataset("digits_cnn").X_test[: 64 if ctx.quick else 256]
    shard = len(x) // 16
    reps = ctx.repeats(3)
    n_tiny = 8 if ctx.quick else 32
    times: dict[str, float] = {}
    tiny: dict[str, float] = {}
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as d:
        torch.set_num_threads(1)
        try:
            explain_dataset(model, x[:32], out=Path(d) / "lw", shard_size=shard, **_IG)
            times["local"] = _timed_runs(
                lambda k: explain_dataset(model, x, out=Path(d) / f"l{k}", shard_size=shard, **_IG), reps)
            tiny["local"] = _timed_runs(lambda k: explain_dataset(
                model, x[:n_tiny], out=Path(d) / f"lt{k}", method="saliency", shard_size=1, progress=False), 1) / n_tiny
        finally:
            torch.set_num_threads(before)
        for workers in (1, 2):
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                          dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
                def run(k: int, tag: str = f"d{workers}", **kw: Any) -> None:
                    explain_dataset(model, x, out=Path(d) / f"{tag}-{k}", shard_size=shard, engine="dask",
                                    scheduler=client, **{**_IG, **kw})

                explain_dataset(model, x[:32], out=Path(d) / f"w{workers}", shard_size=shard, engine="dask",
                                scheduler=client, **_IG)
                times[f"dask{workers}"] = _timed_runs(run, reps)
                tiny[f"dask{workers}"] = _timed_runs(lambda k, tag=f"t{workers}": explain_dataset(
                    model, x[:n_tiny], out=Path(d) / f"{tag}-{k}", method="saliency", shard_size=1,
                    engine="dask", scheduler=client, progress=False), 1) / n_tiny
    load = load_info()
    n = len(x)
    return [
        Row("scale", "IG-16 dataset: 1 Dask worker vs local engine (torch 1 thread each)",
            f"W3 {n} images, 16 shards", times["dask1"], ref_name="local engine", ref_s=times["local"],
            note=(f"{n / times['dask1']:.0f} vs {n / times['local']:.0f} img/s; one tiny task end to end "
                  f"{tiny['dask1'] * 1e3:.0f} ms on Dask, {tiny['local'] * 1e3:.0f} ms locally; {load}")),
        Row("scale", "IG-16 dataset: 2 Dask workers vs 1", f"W3 {n} images, 16 shards", times["dask2"],
            ref_name="1 worker", ref_s=times["dask1"],
            note=(f"speed-up {times['dask1'] / times['dask2']:.2f}x ({n / times['dask2']:.0f} img/s); one tiny "
                  f"task {tiny['dask2'] * 1e3:.0f} ms; {load}")),
    ]


def _budget_row(ctx: Context, threads: int | None) -> Row:
    from unveil.scale import Explainer

    model, x = w3()
    n = 20 if ctx.quick else 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a loaded machine may not fit 2 steps
        t0 = time.perf_counter()
        ex = Explainer(model, "integrated_gradients", budget_ms=50, example=x[:1], threads=threads)
        setup = time.perf_counter() - t0
        lat, gaps, steps, ok = [], [], [], 0
        for i in range(n):
            t0 = time.perf_counter()
            e = ex(x[i % len(x)][None])
            lat.append(time.perf_counter() - t0)  # the caller's clock, around the whole call
            b = e.meta["budget"]
            gaps.append(b["quality"].get("completeness_gap", np.nan))
            steps.append(b["units"])
            ok += bool(b["ok"])
    ms = np.array(lat) * 1e3
    met = float(np.mean(ms <= 50))
    label = "torch threads as set" if threads is None else f"threads={threads}"
    return Row("scale", f"IG budget_ms=50, single inputs ({label})", f"W3 x{n}", float(np.median(lat)),
               note=(f"{met:.1%} within 50 ms by the caller's clock (first call included); p95 "
                     f"{np.quantile(ms, 0.95):.1f} ms, max {ms.max():.0f} ms; median steps {int(np.median(steps))}; "
                     f"median completeness gap {np.nanmedian(gaps):.2%}; {ok}/{n} ok; calibration in the "
                     f"constructor {setup * 1e3:.0f} ms; {load_info()}"),
               extra={"met_share": met})


def run(ctx: Context) -> list[Row]:
    return [_budget_row(ctx, None), _budget_row(ctx, 1), *_dask_rows(ctx)]
