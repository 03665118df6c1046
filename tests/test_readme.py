"""The README runs as written: its Python blocks top to bottom in one namespace (every name
defined), and its command lines except ``serve`` (a server) through the CLI's ``main``."""

from __future__ import annotations

import os
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", TEXT, flags=re.S)


def _cli_lines() -> list[str]:
    lines = []
    for block in _blocks("bash"):
        for raw in block.splitlines():
            line = raw.split("  #")[0].strip()
            if line.startswith("unveil ") and not line.startswith("unveil serve"):
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Run every Python block, in order, in one namespace, in a fresh folder."""
    import matplotlib.pyplot as plt

    folder = tmp_path_factory.mktemp("readme")
    before = Path.cwd()
    os.chdir(folder)
    ns: dict[str, Any] = {"__name__": "readme"}
    try:
        for i, code in enumerate(_blocks("python")):
            exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)  # noqa: S102
            plt.close("all")
    finally:
        os.chdir(before)
    return folder, ns


def test_the_python_blocks_run_and_say_what_they_claim(ran: tuple[Path, dict[str, Any]]) -> None:
    folder, ns = ran
    assert len(_blocks("python")) >= 5
    assert ns["exp"].quality["in_distribution"]["rows_outside"] == [0, 1, 2, 3]
    assert ns["shap"].feature_names[:2] == ["alcohol", "malic_acid"]
    assert ns["audit"].verdict == "fail"
    best = ns["found"].ranking()[0][0]
    assert (ns["found"].patch_positions[best] == 0).all()  # the mark's corner
    for name in ("ig.npz", "audit.html", "report.html", "credit.csv"):
        assert (folder / name).is_file(), name


@pytest.mark.parametrize("line", _cli_lines())
def test_the_command_lines_run(line: str, ran: tuple[Path, dict[str, Any]],
                               capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from unveil.cli import main

    folder, _ = ran
    monkeypatch.chdir(folder)
    try:
        with warnings.catch_warnings():  # as a user runs them: a warning is printed, not raised
            warnings.simplefilter("default")
            main(shlex.split(line)[1:])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    err = capsys.readouterr().err
    expected = 3 if "--fail-on fail" in line else 0  # the README says the audit fails
    assert code == expected, err
