"""A quick run of every benchmark module, so the benchmarks cannot rot (no ratio is asserted)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(ROOT / "benchmarks")]) if m.name.startswith("bench_"))


@pytest.mark.parametrize("module", MODULES)
def test_benchmark_module_runs(module: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    # this checkout's sources first, so the run measures them and not an installed unveil
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", module, "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert rows, f"{module} produced no rows"
    for r in rows:
        assert r["unveil_s"] > 0 and r["method"]
