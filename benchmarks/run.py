"""Run the benchmarks and print one table: ``python -m benchmarks.run [--quick] [--only NAME]``.

Each ``benchmarks/bench_*.py`` module defines ``run(ctx) -> list[Row]``. Times are medians after
a warm-up, with ``torch.set_num_threads(2)``; ``OPENBLAS_CORETYPE`` is left as it is.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import torch

from ._common import Context, Row, load_info


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v * 1e3:.1f}"
    return f"{v:.2f}"


def print_table(rows: list[Row]) -> None:
    head = ("group", "method", "workload", "unveil ms", "reference", "ref ms", "ratio", "evals", "x floor", "note")
    lines = [head]
    for r in rows:
        lines.append((
            r.group, r.method, r.workload, _fmt(r.unveil_s, "ms"), r.ref_name or "-", _fmt(r.ref_s, "ms"),
            _fmt(r.ratio), "-" if r.n_evals is None else str(r.n_evals), _fmt(r.over_floor), r.note,
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for k, line in enumerate(lines):
        print(" | ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if k == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke run)")
    ap.add_argument("--only", action="append", default=[], help="run only bench_NAME modules")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    print(f"unveil benchmarks — torch {torch.__version__}, {torch.get_num_threads()} threads, {load_info()}")
    ctx = Context(quick=args.quick)
    rows: list[Row] = []
    failed = []
    pkg = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(pkg)]) if m.name.startswith("bench_"))
    for name in names:
        if args.only and name.removeprefix("bench_") not in args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
            rows.extend(mod.run(ctx))
        except Exception:  # one broken module must not hide the others' numbers
            failed.append(name)
            traceback.print_exc()
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([{**r.__dict__, "ratio": r.ratio, "over_floor": r.over_floor} for r in rows], indent=1, default=str))
    if failed:
        print(f"FAILED benchmark modules: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
