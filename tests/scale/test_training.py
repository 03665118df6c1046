"""Training-set features for TRAK/TracIn in resumable shards: a killed and resumed run gives the
features of one run, and the estimators take them in place of computing their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from unveil.data_attribution import training_influence
from unveil.errors import InputError
from unveil.scale import training as training_mod
from unveil.scale.training import training_features


def _setup() -> tuple[nn.Module, list[nn.Module], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(70, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    models: list[nn.Module] = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).eval())
    return models[0], models, x, y


def test_killed_run_resumes_to_the_features_of_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, models, x, y = _setup()
    opts: dict[str, Any] = dict(method="trak", checkpoints=models, proj_dim=16, shard_size=20, progress=False)
    real = training_mod.feature_shard
    calls: list[int] = []

    def crashing(*args: Any, **kw: Any) -> dict[str, np.ndarray]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while computing the third shard
        return real(*args, **kw)

    monkeypatch.setattr(training_mod, "feature_shard", crashing)
    with pytest.raises(KeyboardInterrupt):
        training_features(model, (x, y), out=tmp_path / "run", **opts)
    monkeypatch.setattr(training_mod, "feature_shard", real)
    n_files = sorted(p.name for p in (tmp_path / "run").glob("shard-*.npz"))
    assert n_files == ["shard-00000.npz", "shard-00001.npz"]
    mtimes = {p: (tmp_path / "run" / p).stat().st_mtime_ns for p in n_files}
    resumed = training_features(model, (x, y), out=tmp_path / "run", **opts)
    for p, t in mtimes.items():  # finished shards were not recomputed
        assert (tmp_path / "run" / p).stat().st_mtime_ns == t
    clean = training_features(model, (x, y), out=tmp_path / "clean", **opts)
    a, b = resumed.arrays(), clean.arrays()
    assert a["phi"].shape == (3, 70, 16) and a["q"].shape == (3, 70)
    for k in ("phi", "q", "labels"):
        np.testing.assert_array_equal(a[k], b[k])
    # and the estimator, fed the sharded features, gives the scores it computes itself
    direct = training_influence(model, (x, y), x[:4], y[:4], method="trak", checkpoints=models, proj_dim=16)
    fed = training_influence(model, (x, y), x[:4], y[:4], method="trak", checkpoints=models, proj_dim=16,
                             train_features=resumed.trak_features())
    torch.testing.assert_close(fed.scores, direct.scores, rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="computed with"):  # features of other model states are refused
        training_influence(model, (x, y), x[:4], y[:4], method="trak", checkpoints=models[::-1], proj_dim=16,
                           train_features=resumed.trak_features())


def test_tracin_features_and_refusals(tmp_path: Path) -> None:
    model, models, x, y = _setup()
    run = training_features(model, (x, y), method="tracin", checkpoints=models, lrs=[0.1, 0.2, 0.3], proj_dim=None,
                            shard_size=32, out=tmp_path / "t", progress=False)
    direct = training_influence(model, (x, y), x[:3], y[:3], method="tracin", checkpoints=models, lrs=[0.1, 0.2, 0.3])
    fed = training_influence(model, (x, y), x[:3], y[:3], method="tracin", checkpoints=models, lrs=[0.1, 0.2, 0.3],
                             train_features=run.tracin_features())
    torch.testing.assert_close(fed.scores, direct.scores, rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="another configuration"):
        training_features(model, (x, y), method="tracin", checkpoints=models, lrs=[0.1, 0.2, 0.4], proj_dim=None,
                          shard_size=32, out=tmp_path / "t", progress=False)
    with pytest.raises(InputError, match="no labels"):
        training_features(model, x, out=tmp_path / "u", progress=False)
    with pytest.raises(InputError, match="not TRAK"):
        run.trak_features()


@pytest.mark.dask
def test_dask_engine_gives_the_local_features(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    model, models, x, y = _setup()
    opts: dict[str, Any] = dict(method="trak", checkpoints=models, proj_dim=16, shard_size=25, progress=False)
    local = training_features(model, (x, y), out=tmp_path / "local", **opts).arrays()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        remote = training_features(model, (x, y), out=tmp_path / "dask", engine="dask",
                                   scheduler=c.scheduler_address, **opts).arrays()
    for k in ("phi", "q", "labels"):
        np.testing.assert_allclose(remote[k], local[k], rtol=1e-6, atol=1e-7)
