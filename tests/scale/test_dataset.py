"""Sharded, resumable dataset runs (local engine)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import unveil as uv
from _util import TinyCNN, mlp
from unveil.errors import InputError
from unveil.scale import explain_dataset
from unveil.scale._run import read_manifest


class FailingOnce(torch.nn.Module):
    """Wraps a model and raises on the first call that sees a row marked by a sentinel value."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.armed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed and bool((x[:, 0] == 123.0).any()):
            raise RuntimeError("crash in the middle of the run")
        return self.inner(x)


def test_killed_run_resumes_to_the_same_output(tmp_path) -> None:
    x = torch.randn(50, 6)
    x[33, 0] = 123.0  # shard 3 (rows 30..39) crashes on the first run
    model = FailingOnce(mlp()).eval()
    opts: dict[str, Any] = dict(method="integrated_gradients", n_steps=8, shard_size=10, progress=False)
    with pytest.raises(RuntimeError, match="crash"):
        explain_dataset(model, x, out=tmp_path / "run", **opts)
    manifest = read_manifest(tmp_path / "run")  # manifest.json and the shards journaled since
    assert sorted(manifest["shards"]) == ["00000", "00001", "00002"] and not manifest["complete"]
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["shards"] == {}  # not rewritten per shard
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").glob("shard-*.npz")}
    model.armed = False
    resumed = explain_dataset(model, x, out=tmp_path / "run", **opts)
    # finished shards were skipped, not recomputed
    for name, t in mtimes.items():
        assert (tmp_path / "run" / name).stat().st_mtime_ns == t
    clean = explain_dataset(model, x, out=tmp_path / "clean", **opts)
    a, b = resumed.values(), clean.values()
    assert a.shape == (50, 6) and np.array_equal(a, b)
    rows = [r for e in resumed.shards() for r in range(*e.meta["rows"])]
    assert rows == list(range(50))  # no row missing or repeated
    direct = uv.explain(model, x, method="integrated_gradients", n_steps=8).values
    np.testing.assert_allclose(a, direct, rtol=1e-5, atol=1e-6)


def test_stochastic_method_seeds_per_shard_independent_of_resume(tmp_path) -> None:
    x = torch.rand(12, 1, 16, 16)
    net = TinyCNN().eval()
    if "smoothgrad" not in {m.name for m in uv.methods()}:
        pytest.skip("smoothgrad is not registered")
    r1 = explain_dataset(net, x, out=tmp_path / "a", method="smoothgrad", n_samples=4, shard_size=5, seed=7, progress=False)
    r2 = explain_dataset(net, x, out=tmp_path / "b", method="smoothgrad", n_samples=4, shard_size=5, seed=7, progress=False)
    assert np.array_equal(r1.values(), r2.values())
    r3 = explain_dataset(net, x, out=tmp_path / "c", method="smoothgrad", n_samples=4, shard_size=5, seed=8, progress=False)
    assert not np.array_equal(r1.values(), r3.values())


def test_table_summary_and_parquet(tmp_path) -> None:
    torch.manual_seed(0)
    w = torch.tensor([3.0, -1.0, 0.0, 0.5])
    lin = torch.nn.Linear(4, 1)
    with torch.no_grad():
        lin.weight.copy_(w[None])
        lin.bias.zero_()
    model = torch.nn.Sequential(lin, torch.nn.Flatten(0)).eval()
    df = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 4)), columns=["a", "b", "c", "d"])
    df["label"] = 1
    run = explain_dataset(model, df, out=tmp_path / "t", method="integrated_gradients", n_steps=4,
                          shard_size=16, label_column="label", progress=False)
    imp = run.summary["global_importance"]
    # IG on a linear model is x*w, so mean |attr| = |w| * mean |x|
    expect = np.abs(w.numpy()) * np.abs(df[["a", "b", "c", "d"]].to_numpy()).mean(0)
    got = {d["feature"]: d["mean_abs"] for d in imp}
    np.testing.assert_allclose([got[k] for k in "abcd"], expect, rtol=1e-4)
    assert imp[0]["feature"] == "a" and imp[-1]["feature"] == "c"
    parquet = pd.read_parquet(tmp_path / "t" / "shard-00000.parquet")
    assert list(parquet["row"]) == list(range(16)) and "attr:a" in parquet.columns
    e0 = next(run.shards())
    assert e0.feature_names == ["a", "b", "c", "d"] and np.array_equal(e0.extras["labels"], np.ones(16))


def test_image_summary_mean_maps(tmp_path) -> None:
    net = TinyCNN().eval()
    x = torch.rand(10, 1, 16, 16)
    run = explain_dataset(net, torch.utils.data.TensorDataset(x, torch.zeros(10)), out=tmp_path / "i",
                          method="saliency", shard_size=4, progress=False)
    maps = np.load(tmp_path / "i" / "summary.npz")
    vals = run.values()
    targets = np.concatenate([e.targets for e in run.shards()])
    c = int(targets[0])
    np.testing.assert_allclose(maps[f"class_{c}"], vals[targets == c].mean(0), rtol=1e-5, atol=1e-7)


def test_other_configuration_is_refused(tmp_path) -> None:
    x = torch.randn(8, 6)
    explain_dataset(mlp().eval(), x, out=tmp_path / "r", method="saliency", shard_size=4, progress=False)
    with pytest.raises(InputError, match="another configuration"):
        explain_dataset(mlp().eval(), x, out=tmp_path / "r", method="integrated_gradients", shard_size=4, progress=False)
    with pytest.raises(InputError, match="shuffle=False"):
        loader: Any = torch.utils.data.DataLoader(x, shuffle=True)  # type: ignore[arg-type]  # a tensor is a dataset at run time
        explain_dataset(mlp().eval(), loader, out=tmp_path / "s", progress=False)


def test_dataloader_and_csv_sources(tmp_path) -> None:
    x = torch.randn(11, 6)
    net = mlp().eval()
    loader: Any = torch.utils.data.DataLoader(x, batch_size=3)  # type: ignore[arg-type]  # a tensor is a dataset at run time
    a = explain_dataset(net, loader, out=tmp_path / "dl", method="saliency", shard_size=4,
                        progress=False).values()
    pd.DataFrame(x.numpy(), columns=[f"f{i}" for i in range(6)]).to_csv(tmp_path / "d.csv", index=False)
    b = explain_dataset(net, tmp_path / "d.csv", out=tmp_path / "csv", method="saliency", shard_size=4, progress=False).values()
    c = uv.explain(net, x, method="saliency").values
    np.testing.assert_allclose(a, c, rtol=1e-5)
    np.testing.assert_allclose(b, c, rtol=1e-5)
