"""``unveil influence``: which training rows drove each decision, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unveil.cli import main
from unveil.data_attribution import TrainingAttribution, training_influence

MODULE = """
from torch import nn

def make():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
"""


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, nn.Module, np.ndarray, np.ndarray]:
    from safetensors.torch import save_file

    (tmp_path / "inflmodels.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    net.eval()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    np.save(tmp_path / "train.npy", x)
    np.save(tmp_path / "labels.npy", y)
    np.save(tmp_path / "test.npy", x[:3] + 0.1)
    return tmp_path, net, x, y


def test_influence_prints_proponents_and_writes_the_library_result(capsys: pytest.CaptureFixture[str],
                                                                   files: tuple[Path, nn.Module, np.ndarray, np.ndarray]) -> None:
    tmp, net, x, y = files
    code, out, err = _main(capsys, "influence", "-m", "inflmodels:make", "--weights", "w.safetensors", "--data",
                           "train.npy", "--labels", "labels.npy", "-i", "test.npy", "--method", "trak",
                           "-o", "proj_dim=64", "-k", "2", "--evaluate", "10", "--out", "r.npz")
    assert code == 0, err
    assert "row 0 (target" in out and "proponents: #" in out and "loo_correlation" in out
    res = TrainingAttribution.load(tmp / "r.npz")
    xt = torch.from_numpy(x[:3] + 0.1)
    decided = net(xt).argmax(1)
    ref = training_influence(net, (torch.from_numpy(x), torch.from_numpy(y)), xt, decided, method="trak", proj_dim=64)
    torch.testing.assert_close(res.scores, ref.scores)
    assert "loo_correlation" in res.evaluation
    code, out, _ = _main(capsys, "influence", "-m", "inflmodels:make", "--weights", "w.safetensors", "--data",
                         "train.npy", "--labels", "labels.npy", "-i", "test.npy", "--targets", "1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["method"] == "influence" and doc["params"]["params"] == "last"
    assert [r["target"] for r in doc["rows"]] == [1, 1, 1]


def test_influence_bad_input_is_one_clear_line(capsys: pytest.CaptureFixture[str],
                                               files: tuple[Path, nn.Module, np.ndarray, np.ndarray]) -> None:
    tmp, _, x, _ = files
    np.save(tmp / "short.npy", np.zeros(5, dtype=np.int64))
    code, _, err = _main(capsys, "influence", "-m", "inflmodels:make", "--weights", "w.safetensors", "--data",
                         "train.npy", "--labels", "short.npy", "-i", "test.npy")
    assert code == 1 and "60 training rows but 5 labels" in err and "Traceback" not in err
    code, _, err = _main(capsys, "influence", "-m", "inflmodels:make", "--weights", "w.safetensors", "--data",
                         "train.npy", "-i", "test.npy")
    assert code == 1 and "--labels" in err
    code, _, err = _main(capsys, "influence", "-m", "inflmodels:make", "--weights", "w.safetensors", "--data",
                         "train.npy", "--labels", "labels.npy", "-i", "test.npy", "--method", "trakk")
    assert code == 1 and "did you mean 'trak'" in err
