"""The result of :func:`~unveil.counterfactual.counterfactuals`: rows, scores, metrics, words.

Everything is in the table's own units and column names. Per counterfactual the CARLA metrics
(Pawelczyk et al., 2021, "CARLA: a Python library to benchmark algorithmic recourse"): validity,
proximity (L0 = columns changed, L1 and L2 in units of each column's scale), constraint
violations, plausibility (mean distance to the ``k`` nearest data rows, same units) and yNN (the
share of those neighbours the model gives the counterfactual's class); the search time.
Saved as one ``.npz`` of numeric arrays plus UTF-8 JSON metadata; loading never unpickles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.result_file import read_result, write_result
from ..errors import InputError, OptionError

__all__ = ["Counterfactuals", "format_cell", "format_value", "recourse_sentence"]

_ARRAYS = ("x", "label", "desired", "rows", "valid", "scores", "x_scores", "closest", "closest_scores",
           "l0", "l1", "l2", "plausibility", "ynn", "violations", "scale", "closest_violations")
_KIND = "unveil.counterfactuals/1"


def format_value(v: float) -> str:
    """A value as a person writes it: ``4,200``, ``0.35``, ``36``."""
    if not math.isfinite(v):
        return str(v)
    if abs(v - round(v)) < 1e-9:
        return f"{int(round(v)):,}"
    mag = abs(v)
    if mag >= 1000:
        return f"{v:,.0f}"
    if mag >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def format_cell(name: str, v: float, words: Mapping[str, Sequence[str]] | None = None) -> str:
    """A cell as a person reads it: the word of a coded text column (``region`` 2 -> ``east``),
    else :func:`format_value`."""
    w = (words or {}).get(name)
    if w and math.isfinite(v) and v == round(v) and 0 <= int(round(v)) < len(w):
        return str(w[int(round(v))])
    return format_value(v)


def _class(names: list[str] | None, k: int) -> str:
    return names[k] if names and 0 <= k < len(names) else f"class {k}"


def recourse_sentence(names: list[str], x: np.ndarray, row: np.ndarray, before: str, after: str,
                      words: Mapping[str, Sequence[str]] | None = None) -> str:
    """``Had income been 4,200 instead of 3,100 and term been 36 instead of 60, the decision
    would have been “approved” instead of “rejected”.`` (``words``: the words of coded text
    columns, ``{column: [word of 0, word of 1, …]}``.)"""
    changed = [j for j in range(x.size) if abs(row[j] - x[j]) > 1e-9 * max(1.0, abs(x[j]))]
    if not changed:
        return f"The decision is already \u201c{after}\u201d."
    parts = [f"{names[j]} been {format_cell(names[j], float(row[j]), words)} instead of "
             f"{format_cell(names[j], float(x[j]), words)}" for j in changed]
    said = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Had {said}, the decision would have been \u201c{after}\u201d instead of \u201c{before}\u201d."


@dataclass
class Counterfactuals:
    """Counterfactuals for N rows, up to K each (rows with NaN where fewer were found).

    ``rows[i, k]`` is the k-th counterfactual of input ``x[i]`` (valid when ``valid[i, k]``),
    ``scores[i, k]`` the model's scores there. A row without any valid counterfactual has its
    closest candidate (the highest margin found that breaks no constraint) in ``closest[i]``.
    """

    feature_names: list[str]
    class_names: list[str] | None
    x: np.ndarray  # (N, F)
    label: np.ndarray  # (N,) the model's class of each input
    desired: np.ndarray  # (N,) the class each counterfactual reaches
    rows: np.ndarray  # (N, K, F)
    valid: np.ndarray  # (N, K) bool
    scores: np.ndarray  # (N, K, C)
    x_scores: np.ndarray  # (N, C)
    closest: np.ndarray  # (N, F), NaN where a valid counterfactual exists
    closest_scores: np.ndarray  # (N, C)
    l0: np.ndarray  # (N, K)
    l1: np.ndarray
    l2: np.ndarray
    plausibility: np.ndarray
    ynn: np.ndarray
    violations: np.ndarray  # (N, K) int: constraints broken (0 for every returned valid row)
    scale: np.ndarray  # (F,) the unit of each column in L1/L2 and plausibility
    method: str = "gradient"
    constraints: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    n_evals: int = 0
    #: (N,) constraints broken by ``closest`` (it may flip the decision only by breaking some)
    closest_violations: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: the words of coded text columns (``{column: [word of code 0, …]}``), for sentences and tables
    value_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.closest_violations.shape != (self.x.shape[0],):
            self.closest_violations = np.zeros(self.x.shape[0], np.int64)

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def found(self) -> np.ndarray:
        """(N,) whether each row has at least one valid counterfactual."""
        return np.asarray(self.valid.any(axis=1))

    def status(self, i: int) -> str:
        """``"found"`` or ``"no counterfactual within these constraints"``."""
        return "found" if self.found[i] else "no counterfactual within these constraints"

    def recourse(self, i: int, k: int = 0) -> str:
        """What would have to change for row ``i``, in words (its k-th counterfactual)."""
        before, after = _class(self.class_names, int(self.label[i])), _class(self.class_names, int(self.desired[i]))
        if not self.found[i]:
            base = f"No change within these constraints makes the decision \u201c{after}\u201d."
            row, x = self.closest[i], self.x[i]
            moved = [j for j in range(x.size) if np.isfinite(row[j]) and abs(row[j] - x[j]) > 1e-9 * max(1.0, abs(x[j]))]
            if not moved:
                return base
            parts = [f"{self.feature_names[j]} from {self.cell(j, float(x[j]))} to {self.cell(j, float(row[j]))}"
                     for j in moved]
            said = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
            broken = int(self.closest_violations[i])
            if broken:
                return (f"{base} The closest found changes {said}, but breaks {broken} kind"
                        f"{'s' if broken > 1 else ''} of constraint, so it is not a counterfactual.")
            return f"{base} The closest found changes {said}, and the decision stays \u201c{before}\u201d."
        ks = np.flatnonzero(self.valid[i])
        kk = int(ks[min(k, ks.size - 1)])
        return recourse_sentence(self.feature_names, self.x[i], self.rows[i, kk], before, after, self.value_names)

    def cell(self, j: int, v: float) -> str:
        """Value ``v`` of column ``j`` as a person reads it (a coded text column's word)."""
        return format_cell(self.feature_names[j], v, self.value_names)

    @property
    def recourse_texts(self) -> list[str]:
        """:meth:`recourse` of every row (its closest counterfactual), for pages and dashboards."""
        return [self.recourse(i) for i in range(len(self))]

    @property
    def metrics(self) -> dict[str, float]:
        """CARLA's figures over the result: validity (share of rows with a valid counterfactual),
        mean L0/L1/L2, sparsity (mean share of columns left unchanged), constraint violations
        (count over returned counterfactuals), plausibility, yNN, time per counterfactual."""
        v = self.valid
        n_cf = max(int(v.sum()), 1)

        def mean(a: np.ndarray) -> float:
            return float(a[v].mean()) if v.any() else float("nan")

        return {
            "validity": float(self.found.mean()),
            "l0": mean(self.l0), "l1": mean(self.l1), "l2": mean(self.l2),
            "sparsity": 1.0 - mean(self.l0) / self.x.shape[1] if v.any() else float("nan"),
            "violations": float(self.violations[v].sum()),
            "plausibility": mean(self.plausibility), "ynn": mean(self.ynn),
            "seconds": self.seconds, "seconds_per_counterfactual": self.seconds / n_cf,
        }

    def to_pandas(self) -> Any:
        """A long table: one line per input row and counterfactual, the columns in the table's
        names (coded text columns as their words), then ``score``, ``valid``, the metrics and the recourse sentence."""
        import pandas as pd

        recs = []
        for i in range(len(self)):
            ks = np.flatnonzero(self.valid[i])
            items = [(int(k), self.rows[i, k], True) for k in ks] or [(-1, self.closest[i], False)]
            for k, row, ok in items:
                rec: dict[str, Any] = {"row": i, "k": k}
                rec.update({n: self.cell(j, float(v)) if n in self.value_names else float(v)
                            for j, (n, v) in enumerate(zip(self.feature_names, row))})
                sc = self.scores[i, k] if k >= 0 else self.closest_scores[i]
                rec.update({"class": _class(self.class_names, int(self.desired[i] if ok else self.label[i])),
                            "score": float(np.max(sc)) if sc.size else float("nan"), "valid": ok,
                            "status": self.status(i)})
                for name in ("l0", "l1", "l2", "plausibility", "ynn", "violations"):
                    rec[name] = float(getattr(self, name)[i, k]) if k >= 0 else float("nan")
                rec["recourse"] = self.recourse(i, max(k, 0))
                recs.append(rec)
        return pd.DataFrame.from_records(recs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for a dashboard: per row the input, each counterfactual's changed
        columns (from, to), score and metrics, the status and the recourse sentence."""
        rows = []
        for i in range(len(self)):
            cfs = []
            for k in np.flatnonzero(self.valid[i]):
                changes = {n: [float(self.x[i, j]), float(self.rows[i, k, j])] for j, n in enumerate(self.feature_names)
                           if self.rows[i, k, j] != self.x[i, j]}
                words = {n: [self.cell(j, a), self.cell(j, b)] for j, n in enumerate(self.feature_names)
                         if n in changes for a, b in [changes[n]]}
                cfs.append({"values": [float(v) for v in self.rows[i, k]], "changes": changes,
                            "changes_in_words": words,
                            "scores": [float(s) for s in np.ravel(self.scores[i, k])],
                            **{m: float(getattr(self, m)[i, k]) for m in ("l0", "l1", "l2", "plausibility", "ynn")},
                            "violations": int(self.violations[i, k]), "recourse": self.recourse(i, int(k))})
            close = None if self.found[i] else self.closest[i]
            rows.append({"input": [float(v) for v in self.x[i]], "label": int(self.label[i]),
                         "desired": int(self.desired[i]), "status": self.status(i), "counterfactuals": cfs,
                         "closest": None if close is None else [float(v) for v in close],
                         "closest_changes_in_words": None if close is None else {
                             n: [self.cell(j, float(self.x[i, j])), self.cell(j, float(close[j]))]
                             for j, n in enumerate(self.feature_names)
                             if np.isfinite(close[j]) and close[j] != self.x[i, j]},
                         "closest_scores": None if close is None else [
                             float(s) for s in np.ravel(self.closest_scores[i]) if np.isfinite(s)],
                         "closest_violations": None if close is None else int(self.closest_violations[i]),
                         "input_scores": [float(s) for s in np.ravel(self.x_scores[i])],
                         "recourse": self.recourse(i)})
        return {"feature_names": self.feature_names, "class_names": self.class_names, "method": self.method,
                "value_names": self.value_names,
                "constraints": self.constraints, "metrics": _finite(self.metrics), "rows": rows}

    def __repr__(self) -> str:
        m = self.metrics
        return (f"Counterfactuals({len(self)} rows, {int(self.valid.sum())} valid, method={self.method!r}, "
                f"validity={m['validity']:.3f}, l1={m['l1']:.3g}, violations={int(m['violations'])})")

    # -- display ----------------------------------------------------------------------------
    def to_html(self, *, title: str | None = None) -> str:
        """One self-contained page: the recourse in words, the changes, the metrics."""
        from ..report.recourse import (
            recourse_page,  # the permitted upward call, as Explanation.to_html
        )

        return recourse_page(self, title=title)

    def _repr_html_(self) -> str:
        from ..report.recourse import recourse_section

        return recourse_section(self)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write numeric arrays and JSON metadata to one ``.npz`` (nothing pickled)."""
        meta = {"feature_names": self.feature_names, "class_names": self.class_names,
                "method": self.method, "constraints": self.constraints, "params": self.params,
                "seconds": self.seconds, "n_evals": self.n_evals, "value_names": self.value_names}
        return write_result(path, _KIND, meta, {k: np.asarray(getattr(self, k)) for k in _ARRAYS})

    @classmethod
    def load(cls, path: str | Path) -> Counterfactuals:
        """Read a file written by :meth:`save`; refuses anything else with :class:`InputError`."""
        meta, arrays = read_result(path, _KIND, what="an unveil counterfactuals file")
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise InputError(f"cannot load {path}: arrays missing ({missing})")
        n, f = arrays["x"].shape if arrays["x"].ndim == 2 else (-1, -1)
        if (arrays["rows"].ndim != 3 or arrays["rows"].shape[0] != n or arrays["rows"].shape[2] != f
                or len(meta.get("feature_names") or []) != f):
            raise InputError(f"cannot load {path}: the arrays disagree in shape")
        return cls(feature_names=[str(s) for s in meta["feature_names"]], class_names=meta.get("class_names"),
                   method=str(meta.get("method", "")), constraints=dict(meta.get("constraints") or {}),
                   params=dict(meta.get("params") or {}), seconds=float(meta.get("seconds", 0.0)),
                   n_evals=int(meta.get("n_evals", 0)),
                   value_names={str(k): [str(w) for w in v] for k, v in dict(meta.get("value_names") or {}).items()},
                   **{k: (arrays[k].astype(bool) if k == "valid" else arrays[k]) for k in _ARRAYS})


def _finite(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in d.items()}


def check_k(n: Any) -> int:
    """``n_counterfactuals`` as a positive int."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise OptionError(f"n_counterfactuals must be an int >= 1, got {n!r}")
    return int(n)
