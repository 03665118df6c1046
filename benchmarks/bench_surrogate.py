"""Global explanations and surrogates: unveil vs scikit-learn's inspection tools on W2.

W2 is the breast-cancer MLP 30-64-64-1 (one logit; labels ``logit > 0``), queried on its 426
training rows. scikit-learn gets the same torch model behind a minimal estimator wrapper
(``predict`` / ``predict_proba`` under ``inference_mode``), which is how a user would hand a
network to it:

- permutation importance, 5 repeats, all 30 columns: unveil builds the 30x5x426 shuffled rows
  and scores them in chunks; ``sklearn.inspection.permutation_importance`` calls the model once
  per (column, repeat).
- partial dependence + ICE of 4 columns on a 20-point grid: ``sklearn.inspection.
  partial_dependence(method="brute", kind="both")`` calls the model once per grid value.
- distill (tree of depth 4, rules) and the bias audit (synthetic credit set, 2,000 rows, exact
  KernelSHAP over 6 columns for 200 rows with 32 background rows) have no reference; their
  times are shown with their model evaluations.

``x floor`` is the time over the model rows at W2's best batched forward throughput.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import Context, Row, median_time, per_row_floor, w2


class _Wrapped:
    """A scikit-learn classifier view of a torch model with one logit."""

    _estimator_type = "classifier"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.classes_ = np.array([0, 1])

    def fit(self, X: Any, y: Any) -> _Wrapped:  # pragma: no cover - never trained here
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"model": self.model}

    def decision_function(self, X: Any) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.as_tensor(np.asarray(X), dtype=torch.float32)).numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1 - p, p], 1)

    def predict(self, X: Any) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)

    def score(self, X: Any, y: Any) -> float:
        return float((self.predict(X) == np.asarray(y)).mean())


def run(ctx: Context) -> list[Row]:
    from sklearn.inspection import partial_dependence as sk_pd
    from sklearn.inspection import permutation_importance as sk_pi

    import unveil.surrogate as us
    from unveil.audit import bias_audit
    from unveil.audit.examples import credit_scorer, synthetic_credit
    from unveil.core.model import Model

    if ctx.quick:  # smoke run: an untrained net of W2's shape (training W2 takes seconds)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1),
                            nn.Flatten(0)).eval()
        X = np.random.default_rng(0).normal(size=(120, 30))
    else:
        wl = ctx.cache["w2"] if "w2" in ctx.cache else ctx.cache.setdefault("w2", w2())
        net, X = wl.model, wl.x_train.numpy().astype(np.float64)
    est = _Wrapped(net)
    y_own = est.predict(X)
    # the floor's sweep over batch sizes is skipped in the quick smoke run
    floor_row = None if ctx.quick else per_row_floor(net, torch.as_tensor(X[:1], dtype=torch.float32), grad=False)
    reps = 2 if ctx.quick else 5

    def floor(n: int) -> float | None:
        return None if floor_row is None else n * floor_row

    rows: list[Row] = []

    m = Model(net)
    t_ours = median_time(lambda: us.permutation_importance(m, X, n_repeats=reps, threshold=0.0),
                         repeats=ctx.repeats(3))
    t_ref = median_time(lambda: sk_pi(est, X, y_own, scoring="accuracy", n_repeats=reps, random_state=0),
                        repeats=ctx.repeats(3))
    r_gap = 2 if ctx.quick else 20
    ours = us.permutation_importance(m, X, n_repeats=r_gap, threshold=0.0)
    ref = sk_pi(est, X, y_own, scoring="accuracy", n_repeats=r_gap, random_state=0)
    gap = float(np.abs(ours.importances - ref.importances_mean).max())
    n_ev = X.shape[1] * reps * X.shape[0]
    rows.append(Row("surrogate", f"permutation_importance r={reps}", "W2", t_ours, "sklearn", t_ref,
                    n_ev, floor(n_ev), f"max |mean diff| at r={r_gap}: {gap:.3f}"))

    feats = [0, 7, 20, 27]
    t_ours = median_time(lambda: us.partial_dependence(m, X, feats, grid_resolution=20), repeats=ctx.repeats(3))
    t_ref = median_time(lambda: [sk_pd(est, X, [f], grid_resolution=20, kind="both", method="brute",
                                       response_method="decision_function") for f in feats],
                        repeats=ctx.repeats(3))
    pd = us.partial_dependence(m, X, feats, grid_resolution=20)
    rp = [sk_pd(est, X, [f], grid_resolution=20, kind="average", method="brute",
                response_method="decision_function") for f in feats]
    gap = max(float(np.abs(p.average - r["average"][0]).max()) for p, r in zip(pd, rp))
    n_ev = len(feats) * 20 * X.shape[0]
    rows.append(Row("surrogate", "partial_dependence+ICE 4x20", "W2", t_ours, "sklearn", t_ref, n_ev,
                    floor(n_ev), f"max |diff| {gap:.1e}"))

    t = median_time(lambda: us.distill(m, X, kind="rules", max_depth=4, threshold=0.0), repeats=ctx.repeats(3))
    sur = us.distill(m, X, kind="rules", max_depth=4, threshold=0.0)
    rows.append(Row("surrogate", "distill rules depth 4", "W2", t, n_evals=X.shape[0],
                    floor_s=floor(X.shape[0]),
                    note=f"{sur.complexity} rules, held-out fidelity {sur.fidelity():.3f}"))

    Xc, yc, names = synthetic_credit(400 if ctx.quick else 2000)
    scorer = credit_scorer()
    n_explain = 20 if ctx.quick else 200
    t = median_time(lambda: bias_audit(scorer, Xc, sensitive="gender", y=yc, feature_names=names,
                                       n_explain=n_explain), repeats=ctx.repeats(3), warmup=0 if ctx.quick else 1)
    rows.append(Row("audit", f"bias_audit (KernelSHAP {n_explain} rows)", "credit", t,
                    note="fairlearn metrics + proxies + flips"))
    return rows
