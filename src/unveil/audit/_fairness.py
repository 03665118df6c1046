"""Group metrics through fairlearn: selection rate, TPR/FPR, accuracy and base rate per group,
and the demographic-parity and equalized-odds differences (Hardt, Price & Srebro, 2016,
"Equality of opportunity in supervised learning"; Bird et al., 2020, "Fairlearn")."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import require

__all__ = ["group_label", "group_metrics"]


def group_label(v: Any) -> str:
    """A readable, JSON-safe name for a group value (``1.0`` -> ``"1"``)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def group_metrics(
    predicted: np.ndarray, groups: np.ndarray, actual: np.ndarray | None
) -> tuple[dict[str, dict[str, float]], float, float | None]:
    """Per-group metrics and the two differences.

    ``predicted`` and ``actual`` are booleans (positive decision / positive outcome) per row,
    ``groups`` the group of each row. Without ``actual`` only counts and selection rates are
    defined, and the equalized-odds difference is ``None``.
    """
    fm: Any = require("fairlearn.metrics", "audit")
    require("pandas", "audit")
    yp = predicted.astype(np.int64)
    labels = np.array([group_label(g) for g in groups], dtype=object)
    metrics: dict[str, Any] = {"count": fm.count, "selection_rate": fm.selection_rate}
    if actual is not None:
        yt = actual.astype(np.int64)
        metrics.update({
            "base_rate": lambda t, p: float(np.mean(t)),
            "true_positive_rate": fm.true_positive_rate,
            "false_positive_rate": fm.false_positive_rate,
            "accuracy": lambda t, p: float(np.mean(t == p)),
        })
    else:
        yt = yp  # fairlearn wants y_true; no metric here reads it
    frame = fm.MetricFrame(metrics=metrics, y_true=yt, y_pred=yp, sensitive_features=labels)
    by_group = {str(g): {k: float(v) for k, v in row.items()} for g, row in frame.by_group.iterrows()}
    dp = float(fm.demographic_parity_difference(yt, yp, sensitive_features=labels))
    eo = None
    if actual is not None:
        eo = float(fm.equalized_odds_difference(yt, yp, sensitive_features=labels))
    return by_group, dp, eo
