"""``unveil explain``: names from the zoo, ``--background`` rows, and ``-o background=`` pointing
to it (issue 18)."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import unveil as uv
from test_cli import _main
from unveil.cli import main


def _csv(path: Path, rows: np.ndarray, names: list[str]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        w.writerows(rows.tolist())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray, list[str]]:
    data = uv.zoo.load_dataset("breast_cancer_mlp")
    names = list(data.feature_names or [])
    d = tmp_path_factory.mktemp("bg")
    x, bg = data.X_test[:2].numpy(), data.X_train[:30].numpy()
    return _csv(d / "rows.csv", x, names), _csv(d / "bg.csv", bg, names), x, bg, names


def test_background_file_for_kernel_shap_matches_the_library(capsys, files, tmp_path: Path) -> None:
    rows, bg_path, x, bg, names = files
    out = tmp_path / "e.npz"
    code, stdout, err = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i", str(rows),
                              "--method", "kernel_shap", "--background", str(bg_path),
                              "-o", "n_samples=64", "-o", "seed=0", "--out", str(out))
    assert code == 0, err
    exp = uv.load(out)
    ref = uv.explain(uv.zoo.breast_cancer_mlp(), torch.from_numpy(x), method="kernel_shap",
                     background=torch.from_numpy(bg), n_samples=64, seed=0)
    assert exp.params["n_background"] == 30
    assert np.abs(ref.values).max() > 0
    np.testing.assert_allclose(exp.values, ref.values, rtol=1e-4, atol=1e-6)
    # another background gives other values: the file was really used
    code, _, _ = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i", str(rows),
                       "--method", "kernel_shap", "--background", "zoo:breast_cancer_mlp",
                       "-o", "n_samples=64", "-o", "seed=0", "--out", str(tmp_path / "z.npz"))
    assert code == 0 and not np.allclose(uv.load(tmp_path / "z.npz").values, exp.values)
    assert exp.feature_names == names and exp.class_names == ["malignant", "benign"]


def test_background_as_an_option_points_to_the_flag(capsys, files) -> None:
    rows, bg_path, *_ = files
    code, _, err = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i", str(rows),
                         "--method", "kernel_shap", "-o", f"background={bg_path}")
    assert code == 1 and "dtype" not in err
    assert "-o background= takes no file; give the rows with --background PATH" in err
    code, _, err = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i", str(rows),
                         "--method", "saliency", "--background", str(bg_path))
    assert code == 1 and "'saliency' takes no background rows" in err


def test_zoo_names_reach_the_saved_explanation(capsys, tmp_path: Path) -> None:
    out = tmp_path / "zoo.npz"
    code, stdout, err = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i",
                              "zoo:breast_cancer_mlp", "--rows", "0:2", "--method", "saliency",
                              "--out", str(out))
    assert code == 0, err
    exp = uv.load(out)
    assert exp.feature_names == list(uv.zoo.load_dataset("breast_cancer_mlp").feature_names or [])
    assert exp.class_names == ["malignant", "benign"]
    assert "feature " not in stdout and ("benign" in stdout or "malignant" in stdout)


def test_report_background_option_points_to_data(capsys, files, tmp_path: Path) -> None:
    rows, bg_path, *_ = files
    code, _, err = _main(capsys, "report", "-m", "zoo:breast_cancer_mlp", "-i", str(rows),
                         "--method", "kernel_shap", "-o", f"kernel_shap.background={bg_path}",
                         "--out", str(tmp_path / "r.html"))
    assert code == 1 and "give the rows with --data PATH" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_on_a_terminal_unless_quiet(capsys, monkeypatch, files, quiet: bool) -> None:
    rows, bg_path, *_ = files
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["explain", "-m", "zoo:breast_cancer_mlp", "-i", str(rows), "--method", "kernel_shap",
            "--background", str(bg_path), "-o", "n_samples=64", *(["--quiet"] if quiet else [])]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code in (0, None)
    assert ("model rows" in terminal.getvalue()) is not quiet
    assert "kernel_shap: 2 inputs" in capsys.readouterr().out


def test_model_reports_its_evaluations() -> None:
    m = uv.Model(uv.zoo.breast_cancer_mlp())
    seen: list[int] = []
    m.on_evaluate = seen.append
    uv.explain(m, uv.zoo.load_dataset("breast_cancer_mlp").X_test[:3], method="integrated_gradients",
               n_steps=8, batch_size=4)
    assert sum(seen) == m.n_evals > 0 and len(seen) > 1


USER_MODEL = '''
import torch

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
'''


def test_a_users_table_model_needs_background_and_names_the_features_outside(
        capsys, files, tmp_path: Path, monkeypatch) -> None:
    """A model the CLI knows nothing about: a table method without --background is one line
    naming the flag; with it, rows in other units are flagged under the input, by column name."""
    rows, bg_path, x, bg, names = files
    (tmp_path / "usermods.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(capsys, "explain", "-m", "usermods:make", "-i", str(rows),
                         "--method", "kernel_shap")
    assert code == 1 and "pass --background train.csv" in err and "background=" not in err
    far = _csv(tmp_path / "far.csv", x / 1000.0, names)  # a unit mistake
    code, out, err = _main(capsys, "explain", "-m", "usermods:make", "-i", str(far),
                           "--method", "kernel_shap", "--background", str(bg_path),
                           "-o", "n_samples=64", "-o", "seed=0")
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("  ! ")]
    assert len(warnings) == 2 and "outside the data the model knows" in warnings[0]
    assert any(f"{n} = " in warnings[0] for n in names) and "feature 0" not in warnings[0]
