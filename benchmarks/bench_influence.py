"""Influence functions: the four solvers against the exact Hessian and against Captum, and the
built-in evaluation, on scikit-learn digits.

Workload: multinomial logistic regression ``nn.Linear(64, 10)`` in float64 on standardised
digits (500 training rows, 20 explained; ``--quick``: 150 and 5), L2 penalty 1e-2, fitted by
unveil's retrainer to a gradient norm below 1e-8 (650 parameters).

* ``exact`` vs Captum's ``NaiveInfluenceFunction`` (explicit Hessian, all 650 eigenvalues
  kept, ``hessian_reg = n * l2``; Captum's scores are unveil's divided by n): time and the
  largest relative difference.
* ``cg``, ``lissa`` (full batch, depth 1000; quick 200), ``arnoldi`` (200 Krylov steps, top 100
  eigenvalues) vs ``exact``: time and the largest error relative to the largest exact score.
* Leave-one-out correlation (100 rows left out one at a time and retrained; quick 10) and
  mislabel detection AUC (5% of labels flipped, explicit self-influence).

All solvers run with damping 0 (the objective is strictly convex). Times are single runs
(minutes of retraining would not change the picture); the repeats of the fast solvers are
medians.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch
from torch import nn

from ._common import Context, Row, median_time

L2 = 1e-2


def _digits(n_train: int, n_test: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    xt, yt = torch.tensor(x), torch.tensor(y)
    return xt[tr], yt[tr], xt[te], yt[te]


def run(ctx: Context) -> list[Row]:
    from unveil.data_attribution import training_influence
    from unveil.data_attribution.evaluation import Retrainer, loo_correlation, mislabel_auc

    n_train, n_test = (150, 5) if ctx.quick else (500, 20)
    x, y, xt, yt = _digits(n_train, n_test)
    torch.manual_seed(0)
    retrainer = Retrainer(nn.Linear(64, 10).double().eval(), (x, y), xt, yt, params="all", l2=L2)
    model = retrainer.fitted_model()
    work = f"digits logistic, {n_train} train x {n_test} test, 650 params"
    rows: list[Row] = []

    def influence(**opts: object) -> torch.Tensor:
        return training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0, **opts).scores  # type: ignore[arg-type]

    exact = influence()
    t_exact = median_time(influence, repeats=ctx.repeats(3))
    ref_s, note = None, "Captum not installed"
    try:
        from captum.influence._core.influence_function import NaiveInfluenceFunction
        from torch.utils.data import TensorDataset

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.pt")
            torch.save(model.state_dict(), path)
            t0 = time.perf_counter()
            ref = NaiveInfluenceFunction(model, TensorDataset(x, y), path,
                                         loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=n_train,
                                         projection_dim=650, hessian_reg=n_train * L2, hessian_inverse_tol=-1e9)
            theirs = ref.influence((xt, yt)).detach().double()
            ref_s = time.perf_counter() - t0
        diff = float((exact / n_train - theirs).abs().max() / theirs.abs().max())
        note = f"max rel. diff vs Captum {diff:.1e}"
    except ImportError:
        pass
    rows.append(Row("data attribution", "influence exact", work, t_exact, "captum NaiveInfluenceFunction",
                    ref_s, note=note))
    scale = float(exact.abs().max())
    for solver, opts in (("cg", {}), ("lissa", {"depth": 200 if ctx.quick else 1000}),
                         ("arnoldi", {"n_iter": 200, "top_k": 100})):
        t0 = time.perf_counter()
        got = influence(solver=solver, **opts)
        dt = time.perf_counter() - t0
        err = float((got - exact).abs().max()) / scale
        r = float(np.corrcoef(got.reshape(-1).numpy(), exact.reshape(-1).numpy())[0, 1])
        rows.append(Row("data attribution", f"influence {solver}", work, dt, "unveil exact", t_exact,
                        note=f"max error {err:.1e} of the largest exact score, r={r:.4f}",
                        extra={"error": err, "correlation": r}))
    res = training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0)
    k = 10 if ctx.quick else 100
    t0 = time.perf_counter()
    loo = loo_correlation(res, retrainer, rows=k)
    rows.append(Row("data attribution", "LOO correlation", f"{work}, {k} rows retrained", time.perf_counter() - t0,
                    note=f"Pearson {loo['loo_correlation']:.3f} (Spearman {loo['loo_spearman']:.3f})",
                    extra={"loo_correlation": loo["loo_correlation"]}))
    t0 = time.perf_counter()
    mis = mislabel_auc(model, (x, y), share=0.05, params="all", l2=L2, damping=0.0)
    rows.append(Row("data attribution", "mislabel AUC", f"{work}, 5% flipped", time.perf_counter() - t0,
                    note=f"AUC {mis['mislabel_auc']:.3f}, {100 * mis['mislabel_found_top']:.0f}% found in the top 5%",
                    extra={"mislabel_auc": mis["mislabel_auc"]}))
    return rows
