"""Counterfactuals: unveil vs DiCE (``dice-ml==0.12``, MIT) on the same model and rows.

Workload: the synthetic credit table (``unveil.audit.examples.synthetic_credit``, 2,000 rows, 6
columns) and its linear scorer with two logits (``credit_scorer``), as a torch module. Explained:
the first 10 rejected rows (3 with ``--quick``), 3 counterfactuals each, ``gender`` immutable,
every other column within the data's range. DiCE gets the same network:

- ``random`` (model-agnostic) through its scikit-learn backend, behind a ``predict_proba`` that
  calls the network;
- ``gradient`` through its PyTorch backend, on the network behind DiCE's min-max normalisation
  (DiCE optimises normalised inputs) with a sigmoid of the logit difference.

unveil runs ``method="gradient"`` (differentiable) and ``method="spheres"`` (model-agnostic).
Every result is scored by the same code here: validity (share of rows with at least one
counterfactual that the model gives the other class and that breaks no constraint), L0, L1 and
L2 in units of each column's standard deviation, constraint violations, plausibility (mean
distance to the 5 nearest data rows), yNN, and time per counterfactual (valid or not).
Ratios are unveil's time per counterfactual over DiCE's. Timed once per configuration after a
warm-up (DiCE's gradient search takes minutes; repeats would not change the picture). Both
libraries run with one torch thread here: on 6-column rows and a linear model intra-op threads
have nothing to split, and on a shared 2-core machine two of them only oversubscribe it (the
runner's setting is restored afterwards). ``--quick`` explains 3 rows and leaves DiCE's gradient
search out (it takes minutes per row at its defaults: 500 to 5,000 Adam steps, then a post-hoc
sparsity line search through pandas).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import Context, Row

K = 3


class _Normalised(nn.Module):
    """DiCE's PyTorch view: min-max normalised inputs -> P(approved), shape (N, 1)."""

    def __init__(self, net: nn.Module, lo: np.ndarray, hi: np.ndarray) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(hi - lo, dtype=torch.float32))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        one = z.ndim == 1  # DiCE passes single rows as (F,)
        out = self.net((z[None] if one else z) * self.span + self.lo)
        p = torch.sigmoid(out[:, 1:2] - out[:, 0:1])
        return p[0] if one else p


class _Proba:
    """A scikit-learn style classifier around the network (DiCE's random method)."""

    def __init__(self, net: nn.Module, names: list[str]) -> None:
        self.net, self.names = net, names

    def predict_proba(self, X: Any) -> np.ndarray:
        arr = np.asarray(X[self.names] if hasattr(X, "columns") else X, dtype=np.float32)
        with torch.inference_mode():
            return torch.softmax(self.net(torch.from_numpy(arr)), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def _score(rows: np.ndarray, x: np.ndarray, net: nn.Module, data: np.ndarray, data_labels: np.ndarray,
           gender: int, seconds: float) -> dict[str, float]:
    """The CARLA figures of counterfactuals ``rows`` (N, K, F; NaN = missing) of inputs ``x``."""
    n, k, f = rows.shape
    flat = rows.reshape(-1, f)
    have = np.isfinite(flat).all(axis=1)
    lo, hi, sd = data.min(0), data.max(0), data.std(0)
    with torch.inference_mode():
        cls = np.full(flat.shape[0], -1)
        if have.any():
            cls[have] = net(torch.tensor(flat[have], dtype=torch.float32)).argmax(1).numpy()
    xr = np.repeat(x, k, axis=0)
    broken = np.zeros(flat.shape[0], bool)
    broken[have] = ((np.abs(flat[have, gender] - xr[have, gender]) > 1e-9)
                    | ((flat[have] < lo - 1e-9) | (flat[have] > hi + 1e-9)).any(axis=1))
    valid = have & (cls == 1) & ~broken
    d = (flat - xr) / sd
    v = valid
    near = np.linalg.norm(flat[v][:, None, :] / sd - data[None] / sd, axis=2)
    idx = np.argsort(near, axis=1)[:, :5]
    return {
        "validity": float(valid.reshape(n, k).any(axis=1).mean()),
        "cfs": float(have.sum()),
        "l0": float((np.abs(d[v]) > 1e-6).sum(1).mean()) if v.any() else float("nan"),
        "l1": float(np.abs(d[v]).sum(1).mean()) if v.any() else float("nan"),
        "l2": float(np.sqrt((d[v] ** 2).sum(1)).mean()) if v.any() else float("nan"),
        "violations": float(broken[have].sum()),
        "plausibility": float(np.take_along_axis(near, idx, 1).mean()) if v.any() else float("nan"),
        "ynn": float((data_labels[idx] == 1).mean()) if v.any() else float("nan"),
        "s_per_cf": seconds / (n * k),
    }


def _dice_rows(cf: Any, names: list[str], n: int) -> np.ndarray:
    out = np.full((n, K, len(names)), np.nan)
    for i, ex in enumerate(cf.cf_examples_list):
        df = ex.final_cfs_df
        if df is None or len(df) == 0:
            continue
        arr = df[names].to_numpy(np.float64)[:K]
        out[i, :arr.shape[0]] = arr
    return out


def _fmt(m: dict[str, float]) -> str:
    return (f"validity {m['validity']:.2f}, L0 {m['l0']:.2f}, L1 {m['l1']:.3f}, L2 {m['l2']:.3f}, "
            f"violations {int(m['violations'])}, plaus {m['plausibility']:.3f}, yNN {m['ynn']:.2f}")


def run(ctx: Context) -> list[Row]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: Context) -> list[Row]:
    import unveil as uv
    from unveil.audit.examples import credit_scorer, synthetic_credit

    X, _, names = synthetic_credit(2000, seed=0)
    net = credit_scorer().eval()
    with torch.inference_mode():
        labels = net(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy()
    n = 3 if ctx.quick else 10
    rows = X[np.flatnonzero(labels == 0)[:n]]
    gender = names.index("gender")
    lo, hi = X.min(0), X.max(0)
    cons = uv.Constraints(immutable=["gender"], ranges={c: (float(lo[j]), float(hi[j])) for j, c in enumerate(names)})
    out: list[Row] = []
    results: dict[str, dict[str, float]] = {}
    for method in ("gradient", "spheres"):
        kw = dict(data=X, feature_names=names, constraints=cons, n_counterfactuals=K, method=method, seed=0)
        uv.counterfactuals(net, rows[:2], **kw)  # warm-up
        t0 = time.perf_counter()
        res = uv.counterfactuals(net, rows, **kw)
        secs = time.perf_counter() - t0
        results[f"unveil {method}"] = _score(res.rows, rows, net, X, labels, gender, secs)
    try:
        import dice_ml
        import pandas as pd
    except ImportError:
        dice_ml = None
    if dice_ml is not None:
        df = pd.DataFrame(X, columns=names)
        df["approved"] = labels
        d = dice_ml.Data(dataframe=df, continuous_features=list(names), outcome_name="approved")
        query = pd.DataFrame(rows, columns=names)
        vary = [c for c in names if c != "gender"]
        configs = [("random", dice_ml.Model(model=_Proba(net, names), backend="sklearn"))]
        if not ctx.quick:
            configs.append(("gradient", dice_ml.Model(model=_Normalised(net, lo, hi), backend="PYT")))
        for method, model in configs:
            exp = dice_ml.Dice(d, model, method=method)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warm = {"min_iter": 20, "max_iter": 30} if method == "gradient" else {}
                exp.generate_counterfactuals(query.iloc[:1], total_CFs=K, desired_class="opposite", verbose=False,
                                             features_to_vary=vary, **warm)  # warm-up
                t0 = time.perf_counter()
                cf = exp.generate_counterfactuals(query, total_CFs=K, desired_class="opposite", verbose=False,
                                                  features_to_vary=vary)
                secs = time.perf_counter() - t0
            results[f"dice {method}"] = _score(_dice_rows(cf, names, n), rows, net, X, labels, gender, secs)
    pairs = (("gradient", "gradient"), ("spheres", "random"))
    for ours, theirs in pairs:
        u = results[f"unveil {ours}"]
        r = results.get(f"dice {theirs}")
        out.append(Row("counterfactual", f"counterfactuals ({ours})", f"credit, {n} rows x {K}",
                       u["s_per_cf"], f"dice-ml {theirs}" if r else "", r["s_per_cf"] if r else None,
                       note=f"unveil: {_fmt(u)}" + (f" | dice: {_fmt(r)}" if r else ""), extra={"unveil": u, "dice": r}))
    return out
