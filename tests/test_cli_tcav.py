"""``unveil tcav``: concept sets from .npy files and folders, the class's inputs and random pool
from the zoo by default, results as JSON, .npz or a self-contained page; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from report._check import check_self_contained
from unveil.cli import main
from unveil.concepts import TCAVResult
from unveil.zoo import corner_mark_examples, random_digit_examples


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tcav")
    np.save(d / "mark.npy", corner_mark_examples(30).numpy())
    folder = d / "random_digits"
    folder.mkdir()
    for i, x in enumerate(random_digit_examples(12, seed=3).numpy()):
        np.save(folder / f"{i:02d}.npy", x)  # one (1, 32, 32) example per file
    return d


def test_tcav_json_npz_and_html(files: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    base = ["tcav", "-m", "zoo:marked_digits_cnn", "-l", "features.6", "-t", "7",
            "-c", f"corner mark={files / 'mark.npy'}", "-c", str(files / "random_digits"),
            "--n-random", "30"]
    code, out, err = _run([*base, "--json", "--out", str(tmp_path / "t.npz")], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["concepts"] == ["corner mark", "random_digits"]
    assert d["n_examples"] == {"corner mark": 30, "random_digits": 12}
    assert d["n_random"] == 30 and d["scores"][0] >= 0.9 and d["significant"][0]
    back = TCAVResult.load(tmp_path / "t.npz")
    assert back.to_dict()["scores"] == d["scores"]
    code, out, err = _run([*base, "--out", str(tmp_path / "t.html")], capsys)
    assert code == 0, err
    assert "corner mark" in out and "random control" in out
    check_self_contained((tmp_path / "t.html").read_text(encoding="utf-8"))


def test_tcav_errors_are_one_line(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["tcav", "-m", "zoo:marked_digits_cnn", "-t", "7", "-c", f"m={files / 'mark.npy'}"]
    code, _, err = _run([*base, "-l", "features.66"], capsys)
    assert code == 1 and "Closest names: features.6" in err and "Traceback" not in err
    code, _, err = _run([*base, "-l", "features.6", "--n-random", "many"], capsys)
    assert code == 2 and "--n-random" in err
    code, _, err = _run(["tcav", "-m", "zoo:marked_digits_cnn", "-t", "7", "-l", "features.6",
                         "-c", f"few={files / 'random_digits' / '00.npy'}"], capsys)
    assert code == 1 and "has 1 examples" in err
