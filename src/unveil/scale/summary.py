"""The summary written at the end of a dataset run.

Tables: global importance (mean |attribution| per feature, and the mean signed value).
Images and other inputs: the mean map per target class. Computed by streaming over the shards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.explanation import Explanation


def summarize(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Stream the shards of a run and write ``summary.json`` (and ``summary.npz`` for maps)."""
    abs_sum: np.ndarray | None = None
    sum_: np.ndarray | None = None
    per_class: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    n = 0
    names: list[str] | None = None
    tabular = False
    for key in sorted(manifest["shards"]):
        e = Explanation.load(out / manifest["shards"][key]["file"])
        v = e.values.astype(np.float64)
        tabular = v.ndim == 2
        names = names or e.feature_names
        abs_sum = np.abs(v).sum(0) if abs_sum is None else abs_sum + np.abs(v).sum(0)
        sum_ = v.sum(0) if sum_ is None else sum_ + v.sum(0)
        n += len(v)
        targets = e.targets if e.targets is not None else np.zeros(len(v), dtype=np.int64)
        for c in np.unique(targets):
            sel = v[targets == c]
            per_class[int(c)] = per_class.get(int(c), 0) + sel.sum(0)
            counts[int(c)] = counts.get(int(c), 0) + len(sel)
    summary: dict[str, Any] = {"n_rows": n, "method": manifest["config"]["method"]}
    if n and tabular and abs_sum is not None and sum_ is not None:
        names = names or [f"x{i}" for i in range(len(abs_sum))]
        order = np.argsort(-abs_sum)
        summary["global_importance"] = [
            {"feature": names[i], "mean_abs": float(abs_sum[i] / n), "mean": float(sum_[i] / n)} for i in order
        ]
    elif n:
        maps = {f"class_{c}": per_class[c] / counts[c] for c in sorted(per_class)}
        np.savez_compressed(out / "summary.npz", **maps)  # type: ignore[arg-type]  # numpy stubs
        summary["mean_maps"] = {"file": "summary.npz", "classes": {str(c): counts[c] for c in sorted(counts)}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
