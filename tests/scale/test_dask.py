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
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")  # any free port: 8787 may be taken
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
