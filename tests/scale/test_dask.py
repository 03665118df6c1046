"""The Dask engine gives the local engine's results (one module-scoped LocalCluster)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from _util import mlp
from unveil.errors import InputError
from unveil.scale import explain_dataset

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")  # any free port: 8787 may be taken (a warning)
    try:
        yield c
    finally:
        c.close()


def test_dask_equals_local(tmp_path, cluster) -> None:
    x = torch.randn(30, 6)
    net = mlp().eval()
    opts: dict[str, Any] = dict(method="integrated_gradients", n_steps=8, shard_size=7, progress=False)
    local = explain_dataset(net, x, out=tmp_path / "local", **opts).values()
    by_address = explain_dataset(net, x, out=tmp_path / "addr", engine="dask", scheduler=cluster.scheduler_address, **opts)
    torch.testing.assert_close(torch.from_numpy(by_address.values()), torch.from_numpy(local))
    rows = [r for e in by_address.shards() for r in range(*e.meta["rows"])]
    assert rows == list(range(30))
    with distributed.Client(cluster) as client:
        via_client = explain_dataset(net, x, out=tmp_path / "client", engine="dask", scheduler=client, **opts).values()
    torch.testing.assert_close(torch.from_numpy(via_client), torch.from_numpy(local))
    assert np.abs(local).max() > 0


def test_repeated_runs_on_one_client_share_no_model_key(tmp_path, cluster) -> None:
    """Back-to-back runs with the same model on one Client: the second must not depend on data
    the first run is releasing (content-hashed scatter keys once made this fail with 'lost
    dependencies')."""
    x = torch.randn(40, 6)
    net = mlp().eval()
    opts: dict[str, Any] = dict(method="saliency", shard_size=4, progress=False, engine="dask")
    with distributed.Client(cluster) as client:
        runs = [explain_dataset(net, x, out=tmp_path / f"r{i}", scheduler=client, **opts).values() for i in range(12)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


def test_dask_resume_recomputes_a_damaged_shard_and_refuses_changed_data(tmp_path, cluster) -> None:
    x = torch.randn(30, 6)
    net = mlp().eval()
    opts = dict(method="integrated_gradients", n_steps=8, shard_size=7, progress=False, engine="dask",
                scheduler=cluster.scheduler_address)
    first = explain_dataset(net, x, out=tmp_path / "run", **opts).values()
    shard = tmp_path / "run" / "shard-00002.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"shard-00002\.npz has 100 bytes .*shard 00002 \(rows 14\.\.20\) will be recomputed"):
        again = explain_dataset(net, x, out=tmp_path / "run", **opts)
    torch.testing.assert_close(torch.from_numpy(again.values()), torch.from_numpy(first))
    assert again.manifest["complete"] and np.abs(first).max() > 0
    x2 = x.clone()
    x2[3, 1] += 1.0
    with pytest.raises(InputError, match=r"data rows 0\.\.6 \(shard 00000\) differ"):
        explain_dataset(net, x2, out=tmp_path / "run", **opts)


def test_model_is_unpickled_once_per_worker_and_reused_across_runs(tmp_path, cluster) -> None:
    """Two runs of one model: each worker unpickles it at most once (the chunk-size probe and
    prepared copies live on with it) and sets torch's threads and its allocator once."""
    from unveil.scale._shard_task import worker_state

    x = torch.randn(48, 6)
    net = mlp().eval()
    opts: dict[str, Any] = dict(method="integrated_gradients", n_steps=8, shard_size=4, progress=False,
                                engine="dask")
    with distributed.Client(cluster) as client:
        before = client.run(worker_state)
        first = explain_dataset(net, x, out=tmp_path / "a", scheduler=client, **opts).values()
        second = explain_dataset(net, x, out=tmp_path / "b", scheduler=client, **opts).values()
        after = client.run(worker_state)
        loads = {w: after[w]["loads"] - before[w]["loads"] for w in after}
        assert all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1
        tokens = {tuple(s["tokens"]) for w, s in after.items() if loads[w]}
        assert len(tokens) == 1  # the same bytes, the same token on every worker
        assert all(s["threads"] == 1 for w, s in after.items() if loads[w])
        np.testing.assert_array_equal(second, first)
        other = mlp().eval()  # other weights: other bytes, a new token, unpickled again
        with torch.no_grad():
            next(other.parameters()).add_(1.0)
        explain_dataset(other, x, out=tmp_path / "c", scheduler=client, **opts)
        last = client.run(worker_state)
        assert sum(last[w]["loads"] - after[w]["loads"] for w in last) >= 1
        assert {tuple(s["tokens"]) for s in last.values()} != tokens


def test_dask_and_local_give_identical_shards_for_images(tmp_path, cluster) -> None:
    """Seeded sampling on images: the same values whichever engine ran a shard (up to float
    rounding: the worker's torch may run on another number of threads)."""
    from _util import TinyCNN

    x = torch.rand(20, 1, 12, 12)
    net = TinyCNN().eval()
    opts: dict[str, Any] = dict(method="smoothgrad", n_samples=4, shard_size=6, progress=False, seed=3,
                                batch_size=8)
    local = explain_dataset(net, x, out=tmp_path / "local", **opts)
    dask = explain_dataset(net, x, out=tmp_path / "dask", engine="dask", scheduler=cluster.scheduler_address, **opts)
    torch.testing.assert_close(torch.from_numpy(dask.values()), torch.from_numpy(local.values()))
    assert np.abs(local.values()).max() > 0
    assert [e.meta["rows"] for e in dask.shards()] == [e.meta["rows"] for e in local.shards()]


def test_tables_on_dask_keep_feature_names_labels_and_parquet(tmp_path, cluster) -> None:
    """Workers annotate and compress the shard files; what the driver writes from their bytes
    reads back as the local engine's files do."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(20, 6)).astype(np.float32), columns=[f"f{i}" for i in range(6)])
    df["y"] = np.arange(20) % 2
    net = mlp().eval()
    opts: dict[str, Any] = dict(method="saliency", shard_size=8, progress=False, label_column="y")
    local = explain_dataset(net, df, out=tmp_path / "local", **opts)
    dask = explain_dataset(net, df, out=tmp_path / "dask", engine="dask", scheduler=cluster.scheduler_address, **opts)
    for a, b in zip(local.shards(), dask.shards(), strict=True):
        assert b.feature_names == a.feature_names == [f"f{i}" for i in range(6)]
        assert b.meta["rows"] == a.meta["rows"]
        np.testing.assert_array_equal(b.extras["labels"], a.extras["labels"])
        torch.testing.assert_close(torch.from_numpy(b.values), torch.from_numpy(a.values))
    table = pd.read_parquet(tmp_path / "dask" / "shard-00002.parquet")
    assert table["row"].tolist() == list(range(16, 20)) and "attr:f5" in table.columns
