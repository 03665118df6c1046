"""Degenerate maps: explanations that carry no information and must never be shown as one.

A map that is all zero, constant, or not finite for a row ranks nothing: a deletion curve in its
"order" is the order of a stable sort, a heat map is blank, a narrative built on it invents
reasons. :func:`degenerate_rows` finds such rows; :func:`mark_degenerate` records them in
``exp.quality["degenerate"]`` with the likely cause in words, which the report, the dashboard and
the trust card read (a degenerate row is never "ok" and never "faithful").
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["degenerate_rows", "degeneracy_reason", "mark_degenerate"]


def degenerate_rows(values: Any) -> np.ndarray:
    """Boolean per row: the row's values are constant (all zero, say) or not all finite."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0 or v.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    flat = v.reshape(v.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    safe = np.where(np.isfinite(flat), flat, 0.0)
    constant = safe.max(axis=1) - safe.min(axis=1) <= 0 if flat.shape[1] else np.ones(len(flat), bool)
    return np.asarray(~finite | constant)


def degeneracy_reason(method: str, family: str, *, all_zero: bool, layer: str | None = None) -> str:
    """The likely cause of a degenerate map, in words, with what to try."""
    if family == "cam":
        where = f"layer {layer!r}" if layer else "the chosen layer"
        return (f"the class activation map at {where} is {'all zero' if all_zero else 'flat'}: "
                "its gradients for this class point against every positive channel (common after "
                "a pooling or ReLU layer); try layer= an earlier convolution, e.g. the last "
                "convolution's own output")
    if family == "gradient":
        return ("the gradient is zero (or constant) at this input: the model is saturated here "
                "(e.g. a probability of 1.0, or ReLUs all off); try 'integrated_gradients' or a "
                "perturbation method")
    if family in ("perturbation", "shapley"):
        return ("removing features did not change the score: the baseline may equal the inputs, "
                "or the model ignores these features; try background= rows of real data")
    return ("the map is constant for this input, so it ranks nothing; try another method")


def mark_degenerate(exp: Any, family: str) -> None:
    """Record degenerate rows of ``exp`` in ``exp.quality["degenerate"]`` (nothing if none)."""
    rows = degenerate_rows(exp.values)
    if not rows.any():
        exp.quality.pop("degenerate", None)
        return
    v = np.asarray(exp.values, dtype=np.float64).reshape(len(rows), -1)
    all_zero = bool((np.nan_to_num(v[rows]) == 0).all())
    layer = exp.meta.get("layer") if isinstance(exp.meta, dict) else None
    exp.quality["degenerate"] = {
        "rows": [int(i) for i in np.flatnonzero(rows)],
        "n": int(rows.sum()),
        "of": int(len(rows)),
        "kind": "all zero" if all_zero else "constant or not finite",
        "reason": degeneracy_reason(exp.method, family, all_zero=all_zero,
                                    layer=layer if isinstance(layer, str) else None),
    }
