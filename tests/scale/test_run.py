"""Runs that cannot mix: resume checks of a dataset run's configuration, data and shard files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from _util import TinyCNN, mlp
from unveil.errors import InputError
from unveil.scale import explain_dataset
from unveil.scale._run import JOURNAL, read_manifest

OPTS: dict[str, Any] = dict(method="integrated_gradients", n_steps=8, shard_size=10, progress=False)


class CrashOn(torch.nn.Module):
    """Wraps a model and raises on its forward call number ``at`` (counted from 1), or on the
    first call once ``when()`` is true. ``calls`` counts every forward call."""

    def __init__(self, inner: torch.nn.Module, at: int | None = None, when: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.inner, self.at, self.when, self.calls = inner, at, when, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at or (self.when is not None and self.when()):
            raise RuntimeError(f"crash on forward call {self.calls}")
        return self.inner(x)


def _finished(out: Path) -> list[str]:
    return sorted(read_manifest(out)["shards"]) if (out / "manifest.json").exists() else []


def _interrupt(model: torch.nn.Module, data: Any, out: Path, **opts: Any) -> CrashOn:
    """A run of ``model`` that crashes once 2 shards are written; returns the (disarmed) wrapper."""
    crash = CrashOn(model, when=lambda: len(_finished(out)) >= 2).eval()
    with pytest.raises(RuntimeError, match="crash on forward call"):
        explain_dataset(crash, data, out=out, **opts)
    assert _finished(out) == ["00000", "00001"]
    crash.when = None
    return crash


def _state(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# -- resume gives the uninterrupted result --------------------------------------------------------

def test_resume_with_integer_batch_size_is_bitwise_equal(tmp_path) -> None:
    x = torch.randn(50, 6)
    opts = {**OPTS, "batch_size": 16}
    counter = CrashOn(mlp()).eval()
    clean = explain_dataset(counter, x, out=tmp_path / "clean", **opts).values()
    per_shard, rest = divmod(counter.calls, 5)
    assert rest == 0 and per_shard > 0  # every shard of 10 rows costs the same forward calls

    crash = CrashOn(mlp(), at=2 * per_shard + 1).eval()  # the first call of the third shard
    with pytest.raises(RuntimeError, match=f"crash on forward call {2 * per_shard + 1}"):
        explain_dataset(crash, x, out=tmp_path / "run", **opts)
    assert _finished(tmp_path / "run") == ["00000", "00001"]
    crash.at, crash.calls = None, 0
    resumed = explain_dataset(crash, x, out=tmp_path / "run", **opts)
    assert crash.calls == 3 * per_shard  # only the three unfinished shards were explained
    assert resumed.manifest["complete"] and np.abs(clean).max() > 0
    assert np.array_equal(resumed.values(), clean)


def test_resume_with_auto_batch_size_is_close(tmp_path) -> None:
    x = torch.randn(50, 6)
    opts = {**OPTS, "n_steps": 16, "batch_size": "auto"}  # 160 rows a shard: the probe really runs
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", **opts)
    resumed = explain_dataset(crash, x, out=tmp_path / "run", **opts).values()
    clean = explain_dataset(CrashOn(mlp()).eval(), x, out=tmp_path / "clean", **opts).values()
    assert np.abs(clean).max() > 0
    torch.testing.assert_close(torch.from_numpy(resumed), torch.from_numpy(clean))


# -- a resume refuses another input, saying what differs ------------------------------------------

def test_changed_data_rows_are_refused(tmp_path) -> None:
    x = torch.randn(50, 6)
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", **OPTS)
    before = _state(tmp_path / "run")
    x2 = x.clone()
    x2[13, 2] += 1.0  # a row of shard 1, which the interrupted run finished
    with pytest.raises(InputError, match=r"data rows 10\.\.19 \(shard 00001\) differ from the rows the run "
                                         r"explained: the data changed since.*new out=.*overwrite=True"):
        explain_dataset(crash, x2, out=tmp_path / "run", **OPTS)
    assert _state(tmp_path / "run") == before  # the refused call changed nothing
    fresh = explain_dataset(crash, x2, out=tmp_path / "run", overwrite=True, **OPTS)
    assert fresh.manifest["complete"] and len(fresh.values()) == 50


def test_rows_not_yet_explained_may_change(tmp_path) -> None:
    """Every kept shard matches the data as it is now, so the result is a fresh run's on it."""
    x = torch.randn(50, 6)
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", **OPTS)
    x2 = x.clone()
    x2[45] = 3.0  # shard 4: never explained
    resumed = explain_dataset(crash, x2, out=tmp_path / "run", **OPTS)
    clean = explain_dataset(crash, x2, out=tmp_path / "clean", **OPTS)
    assert np.array_equal(resumed.values(), clean.values())
    assert resumed.manifest["data_digest"] == clean.manifest["data_digest"]
    assert resumed.manifest["data_digest"] != explain_dataset(crash, x, out=tmp_path / "x", **OPTS).manifest["data_digest"]


def test_changed_targets_are_refused(tmp_path) -> None:
    x = torch.randn(50, 6)
    t = np.arange(50) % 3
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", target=t, **OPTS)
    t2 = t.copy()
    t2[3] = (t2[3] + 1) % 3
    with pytest.raises(InputError, match=r"another configuration; what differs: targets \(ndarray int64 shape \(50,\) #\w+ in the run"):
        explain_dataset(crash, x, out=tmp_path / "run", target=t2, **OPTS)
    # the same targets in another container are the same targets
    resumed = explain_dataset(crash, x, out=tmp_path / "run", target=torch.as_tensor(t), **OPTS)
    assert np.array_equal(np.concatenate([e.targets for e in resumed.shards()]), t)


def test_changed_baseline_is_refused(tmp_path) -> None:
    x = torch.randn(50, 6)
    b = torch.full((1, 6), 0.5)
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", baseline=b, **OPTS)
    with pytest.raises(InputError, match=r"option 'baseline' \(Tensor torch.float32 shape \(1, 6\) #\w+ in the run"):
        explain_dataset(crash, x, out=tmp_path / "run", baseline=b + 1e-3, **OPTS)
    resumed = explain_dataset(crash, x, out=tmp_path / "run", baseline=b.clone(), **OPTS)
    assert resumed.manifest["complete"]


def test_method_and_option_changes_are_named(tmp_path) -> None:
    x = torch.randn(50, 6)
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", **OPTS)
    with pytest.raises(InputError, match=r"option 'n_steps' \(8 in the run, 16 now\)"):
        explain_dataset(crash, x, out=tmp_path / "run", **{**OPTS, "n_steps": 16})
    with pytest.raises(InputError, match=r"method \('integrated_gradients' in the run, 'saliency' now\); "
                       r"option 'n_steps' \(8 in the run, not set now\)"):
        explain_dataset(crash, x, out=tmp_path / "run", method="saliency", shard_size=10, progress=False)


def test_csv_rewritten_at_the_same_path_is_refused(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    csv = tmp_path / "d.csv"
    cols = [f"f{i}" for i in range(6)]
    pd.DataFrame(x, columns=cols).to_csv(csv, index=False)
    opts = {**OPTS, "shard_size": 4}
    crash = _interrupt(mlp().eval(), csv, tmp_path / "run", **opts)
    x2 = x.copy()
    x2[2, 0] += 1.0
    pd.DataFrame(x2, columns=cols).to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"data rows 0\.\.3 \(shard 00000\) differ"):
        explain_dataset(crash, csv, out=tmp_path / "run", **opts)
    pd.DataFrame(x, columns=["g", *cols[1:]]).to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"columns \['g', 'f1'.* differ from the run's \['f0', 'f1'"):
        explain_dataset(crash, csv, out=tmp_path / "run", **opts)
    pd.DataFrame(x, columns=cols).to_csv(csv, index=False)  # the original file again: resumes
    resumed = explain_dataset(crash, csv, out=tmp_path / "run", **opts).values()
    assert np.array_equal(resumed, explain_dataset(crash, csv, out=tmp_path / "clean", **opts).values())


def test_shorter_data_is_refused(tmp_path) -> None:
    x = torch.randn(50, 6)
    crash = _interrupt(mlp().eval(), torch.utils.data.TensorDataset(x), tmp_path / "run", **OPTS)
    with pytest.raises(InputError, match=r"the data has 15 rows, but shard 00001 of the run explained rows 10\.\.19"):
        explain_dataset(crash, torch.utils.data.TensorDataset(x[:15]), out=tmp_path / "run", **OPTS)
    # a DataLoader does not know its length: the check happens when its rows run out
    crash = _interrupt(mlp().eval(), torch.utils.data.DataLoader(x, batch_size=7), tmp_path / "dl", **OPTS)  # type: ignore[arg-type]  # a tensor is a map-style dataset
    with pytest.raises(InputError, match=r"the data ended before rows 10\.\.19 \(shard 00001\)"):
        explain_dataset(crash, torch.utils.data.DataLoader(x[:10], batch_size=7), out=tmp_path / "dl", **OPTS)  # type: ignore[arg-type]  # a tensor is a map-style dataset


def test_changed_image_file_is_refused(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    opts: dict[str, Any] = dict(method="saliency", shard_size=2, progress=False)
    crash = _interrupt(TinyCNN(in_ch=3).eval(), folder, tmp_path / "run", **opts)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(folder / "3.png")
    with pytest.raises(InputError, match=r"data rows 2\.\.3 \(shard 00001\) differ"):
        explain_dataset(crash, folder, out=tmp_path / "run", **opts)


# -- damaged shards are recomputed, with a warning ------------------------------------------------

def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


@pytest.mark.parametrize(("file", "damage", "says"), [
    ("shard-00001.npz", _truncate, r"has \d+ bytes where the manifest says \d+ \(truncated or damaged\)"),
    ("shard-00001.npz", _flip, r"does not match its checksum in the manifest \(damaged\)"),
    ("shard-00001.npz", Path.unlink, "is missing"),
    ("shard-00001.parquet", _truncate, r"has \d+ bytes where the manifest says \d+ \(truncated or damaged\)"),
])
def test_damaged_shard_is_recomputed_with_a_warning(tmp_path, file, damage, says) -> None:
    x = torch.randn(50, 6)
    net = CrashOn(mlp()).eval()
    clean = explain_dataset(net, x, out=tmp_path / "clean", **OPTS).values()
    explain_dataset(net, x, out=tmp_path / "run", **OPTS)
    damage(tmp_path / "run" / file)
    others = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").glob("shard-*") if "00001" not in p.name}
    net.calls = 0
    with pytest.warns(UserWarning, match=rf"{file.replace('.', '[.]')} {says}; shard 00001 \(rows 10\.\.19\) will be recomputed"):
        rerun = explain_dataset(net, x, out=tmp_path / "run", **OPTS)
    assert net.calls > 0 and rerun.manifest["complete"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").glob("shard-*") if "00001" not in p.name} == others
    assert np.array_equal(rerun.values(), clean)
    assert pd.read_parquet(tmp_path / "run" / "shard-00001.parquet")["row"].tolist() == list(range(10, 20))


def test_unreadable_or_old_manifest_is_refused(tmp_path) -> None:
    x = torch.randn(20, 6)
    run = tmp_path / "run"
    explain_dataset(mlp().eval(), x, out=run, **OPTS)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "format": "unveil.run/1"}))
    with pytest.raises(InputError, match=r"format 'unveil.run/1'.*overwrite=True"):
        explain_dataset(mlp().eval(), x, out=run, **OPTS)
    (run / "manifest.json").write_text(json.dumps(manifest)[:40])
    with pytest.raises(InputError, match=r"manifest.json cannot be read.*overwrite=True"):
        explain_dataset(mlp().eval(), x, out=run, **OPTS)
    assert explain_dataset(mlp().eval(), x, out=run, overwrite=True, **OPTS).manifest["complete"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="maps file descriptors to paths through /proc")
def test_files_are_fsynced_before_replace_and_journaled_after(tmp_path, monkeypatch) -> None:
    """Each shard: its files fsynced, moved into place, then one journal line fsynced. The
    manifest is written twice (configuration first, every shard at the end), the folder synced
    before the final one; never once per shard."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    run = tmp_path / "run"
    explain_dataset(mlp().eval(), torch.randn(40, 6), out=run, **OPTS)
    monkeypatch.undo()
    replaced = [(i, e[1].split(" -> ")) for i, e in enumerate(events) if e[0] == "replace" and str(run) in e[1]]
    names = [Path(dst).name for _, (_, dst) in replaced]
    assert names.count("manifest.json") == 2 and names[0] == names[-1] == "manifest.json"
    for k in range(4):
        assert {f"shard-0000{k}.npz", f"shard-0000{k}.parquet"} <= set(names)
    for i, (src, dst) in replaced:
        assert ("fsync", os.path.realpath(src)) in events[:i], f"{src} replaced {dst} before it was fsynced"
    journal = ("fsync", os.path.realpath(run / JOURNAL))
    journal_syncs = [i for i, e in enumerate(events) if e == journal]
    assert len(journal_syncs) == 4  # one per shard
    shard_moves = [i for i, (_, dst) in replaced if Path(dst).name.startswith("shard-")]
    for k, j in enumerate(journal_syncs):  # shard k's two files are in place before its line is synced
        assert max(shard_moves[: 2 * (k + 1)]) < j and (k == 3 or shard_moves[2 * (k + 1)] > j)
    folder = ("fsync", str(run.resolve()))
    final = replaced[-1][0]
    assert folder in events[journal_syncs[-1] : final] and folder in events[final + 1 :]
    assert not (run / JOURNAL).exists() and sorted(json.loads((run / "manifest.json").read_text())["shards"]) == [
        "00000", "00001", "00002", "00003"]


def test_a_torn_journal_line_names_no_shard(tmp_path) -> None:
    """A crash in the middle of an append leaves part of a line: that shard is computed again,
    the whole lines before it still count."""
    x = torch.randn(50, 6)
    clean = explain_dataset(mlp().eval(), x, out=tmp_path / "clean", **OPTS).values()
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", **OPTS)
    journal = tmp_path / "run" / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    journal.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])
    assert _finished(tmp_path / "run") == ["00000"]
    crash.calls = 0
    resumed = explain_dataset(crash, x, out=tmp_path / "run", **OPTS)
    per_shard = crash.calls // 4  # shards 1..4 computed, shard 0 skipped
    assert per_shard > 0 and crash.calls == 4 * per_shard
    assert np.array_equal(resumed.values(), clean) and resumed.manifest["complete"]
    assert not journal.exists() and sorted(read_manifest(tmp_path / "run")["shards"]) == [f"0000{k}" for k in range(5)]


def test_a_journal_of_another_run_is_ignored(tmp_path) -> None:
    """Lines carry the run's id: a journal left by another run in the folder names no shard of
    this one, so every shard is computed (and the run still completes)."""
    x = torch.randn(30, 6)
    crash = _interrupt(mlp().eval(), x, tmp_path / "run", **OPTS)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({**manifest, "run_id": "another"}))
    assert _finished(tmp_path / "run") == []
    crash.calls = 0
    resumed = explain_dataset(crash, x, out=tmp_path / "run", **OPTS)
    assert resumed.manifest["complete"] and len(resumed.values()) == 30
    assert crash.calls > 0 and crash.calls % 3 == 0  # all three shards, each with the same calls
