"""Shapley values: error at equal budgets on W2-12, and speed against the forward floor.

**W2-12**: the breast-cancer MLP (W2) with its 12 most important features free (ranked by the
mean score change when a feature alone is set to the background mean) and the other 18 held at
the background mean; 16 explained rows; exact values by brute force (ExactShapley, 4096
coalitions). Two value functions: the background *mean* (a baseline) and the average over the
100 background *rows* (interventional). For budgets of 512 and 2048 coalitions per row the table
gives the mean absolute error relative to the mean |exact value| (``note``) and the time of
unveil's KernelShap (default size-stratified estimator, and ``estimator="wls"``) and
PermutationShapley next to shap 0.51 KernelExplainer (default ``l1_reg``, and ``l1_reg=False``),
shap PermutationExplainer, Captum 0.9 KernelShap and ShapleyValueSampling (Captum has no
interventional value function; SVS gets ``(budget - 1) // 12`` permutations, the same number of
evaluations). unveil's errors are means over 3 seeds; the references use one run (their global
``np.random`` seeded) over the same 16 rows. Times are single runs.

**3 MLPs**: mean relative L2 error (``|est - exact| / |exact|`` per row) of KernelShap at 512
coalitions per row over 20 seeds x 3 MLPs of 13, 10 and 14 inputs (breast-cancer columns, two
synthetic tasks; widths 64, 32, 96; ReLU, tanh, GELU; 6 explained rows each), against brute
force, next to shap's ``KernelExplainer(nsamples=512, l1_reg=False)`` (``np.random`` seeded
with the same 20 seeds), for a single background row (the mean of 20) and for 20 background
rows (interventional). ``ratio`` in the note is unveil's error over shap's.

**Speed**: KernelShap with 512 coalitions over 64 8x8 patches of W1 (batch 8) and with the
100-row background on W2-12, as ``x floor`` (time over the model evaluations at the best batched
forward throughput, batch sizes 1..128 measured in this run).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import Context, Row, median_time, per_row_floor, w1, w2
from .bench_perturbation import w1_floor


class _Fixed(nn.Module):
    """The MLP with all but ``idx`` features held at ``base``."""

    def __init__(self, model: nn.Module, base: torch.Tensor, idx: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("base", base.clone())
        self.register_buffer("idx", idx.clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        full = self.base.expand(z.shape[0], -1).clone()
        full[:, self.idx] = z
        return self.model(full)


def w212(ctx: Context) -> dict[str, Any]:
    """The W2-12 game and its exact values for both value functions (cached in ctx)."""
    if "w212" in ctx.cache:
        return ctx.cache["w212"]  # type: ignore[no-any-return]
    from unveil.attribution.shapley import ExactShapley

    wl = w2()
    n_rows, n_bg = (2, 10) if ctx.quick else (16, 100)
    x, bg = wl.x[:n_rows], wl.background[:n_bg]
    mean = wl.background.mean(0, keepdim=True)
    with torch.inference_mode():
        f = wl.model(x)
        imp = torch.stack([(f - wl.model(torch.where(torch.arange(30) == j, mean, x))).abs().mean()
                           for j in range(30)])
    top = imp.argsort(descending=True)[:12]
    model = _Fixed(wl.model, mean, top).eval()
    x12, bg12 = x[:, top].contiguous(), bg[:, top].contiguous()
    vfs = {"mean": {"baseline": "mean", "background": bg12}, "rows": {"background": bg12}}
    exact = {k: ExactShapley(model)(x12, target=None, **kw).extras["group_values"] for k, kw in vfs.items()}
    out = {"model": model, "x": x12, "bg": bg12, "vfs": vfs, "exact": exact}
    ctx.cache["w212"] = out
    return out


def _err(est: np.ndarray, exact: np.ndarray) -> float:
    return float(np.abs(est - exact).mean() / np.abs(exact).mean() * 100)


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn()
    return np.asarray(out, dtype=np.float64), time.perf_counter() - t0


def _references(g: dict[str, Any], vf: str, budget: int, quick: bool) -> dict[str, tuple[np.ndarray, float]]:
    """shap and Captum estimates (values, seconds) for one value function and budget."""
    import shap
    from captum.attr import KernelShap as CKernel
    from captum.attr import ShapleyValueSampling

    model, x, bg = g["model"], g["x"], g["bg"]
    ref_np = bg.mean(0, keepdim=True).numpy() if vf == "mean" else bg.numpy()

    def f(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.as_tensor(a, dtype=torch.float32)).numpy()

    out: dict[str, tuple[np.ndarray, float]] = {}
    for label, opts in (("shap Kernel default", {}), ("shap Kernel l1_reg=False", {"l1_reg": False})):
        np.random.seed(0)
        ex = shap.KernelExplainer(f, ref_np)
        out[label] = _timed(lambda ex=ex, opts=opts: ex.shap_values(x.numpy(), nsamples=budget, silent=True, **opts))
    if not quick:  # shap's permutation explainer compiles with numba on first use (slow)
        np.random.seed(0)
        masker = shap.maskers.Independent(ref_np, max_samples=len(ref_np))
        perm = shap.PermutationExplainer(f, masker)
        perm(x[:1].numpy(), max_evals=budget, silent=True)  # warm-up
        out["shap Permutation"] = _timed(lambda: perm(x.numpy(), max_evals=budget, silent=True).values)
    if vf == "mean":
        base = bg.mean(0, keepdim=True)
        torch.manual_seed(0)
        ck = CKernel(model)
        out["Captum KernelShap"] = _timed(lambda: torch.cat([
            ck.attribute(x[i:i + 1], baselines=base, n_samples=budget) for i in range(len(x))]).numpy())
        svs = ShapleyValueSampling(model)
        out["Captum SVS"] = _timed(lambda: svs.attribute(x, baselines=base, n_samples=(budget - 1) // 12).numpy())
    return out


def _accuracy(ctx: Context) -> list[Row]:
    from unveil.attribution.shapley import KernelShap, PermutationShapley

    g = w212(ctx)
    model, x = g["model"], g["x"]
    seeds = 1 if ctx.quick else 3
    rows: list[Row] = []
    for vf, kw in g["vfs"].items():
        exact = g["exact"][vf]
        for budget in ((64,) if ctx.quick else (512, 2048)):
            ours = {
                "kernel_shap": KernelShap(model, n_samples=budget),
                "kernel_shap wls": KernelShap(model, n_samples=budget, estimator="wls"),
                "permutation_shapley": PermutationShapley(model, n_samples=budget),
            }
            res = {}
            for name, method in ours.items():
                method(x, target=None, seed=0, **kw)  # warm-up (automatic batch size)
                runs = [_timed(lambda m=method, s=s, kw=kw: m(x, target=None, seed=s, **kw).extras["group_values"])
                        for s in range(seeds)]
                res[name] = (np.mean([_err(r, exact) for r, _ in runs]), np.median([t for _, t in runs]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                refs = {k: (_err(v, exact), t) for k, (v, t) in _references(g, vf, budget, ctx.quick).items()}
            best = min(refs.values())[0]
            wl = f"W2-12 {vf} {budget}"
            e0, t0 = res["kernel_shap"]
            for rname, (re, rt) in refs.items():
                rows.append(Row("shapley error", "kernel_shap", wl, t0, rname, rt, budget,
                                note=f"err {e0:.2f}% vs {re:.2f}%", extra={"err": e0, "ref_err": re}))
            for name in ("kernel_shap wls", "permutation_shapley"):
                e, t = res[name]
                rows.append(Row("shapley error", name, wl, t, "best reference", None, budget,
                                note=f"err {e:.2f}% (best ref {best:.2f}%)", extra={"err": e}))
    return rows


def _speed(ctx: Context) -> list[Row]:
    from unveil.attribution.shapley import KernelShap
    from unveil.core.groups import patches

    rows: list[Row] = []
    model, x = w1(batch=1, size=32) if ctx.quick else w1(batch=8)
    side = 16 if ctx.quick else 8
    grp = patches(tuple(x.shape[1:]), side)
    n = 8 if ctx.quick else 512
    ks = KernelShap(model, n_samples=n)
    with torch.inference_mode():
        t = model(x).argmax(1)
    ks(x[:2], target=t[:2], groups=grp, seed=1)  # warm-up: allocator and automatic batch size
    exp: list[Any] = []
    sec = median_time(lambda: exp.append(ks(x, target=t, groups=grp, seed=0)), repeats=1, warmup=0)
    floor = None if ctx.quick else w1_floor(ctx, model, x) * exp[-1].n_evals
    rows.append(Row("shapley speed", f"kernel_shap {n}", f"W1 {grp.n_groups} patches", sec,
                    n_evals=exp[-1].n_evals, floor_s=floor))
    g = w212(ctx)
    ks = KernelShap(g["model"], n_samples=64 if ctx.quick else 512)
    run = lambda: ks(g["x"], target=None, background=g["bg"], seed=0)  # noqa: E731
    run()
    sec = median_time(run, repeats=ctx.repeats(3), warmup=0)
    e = run()
    floor = per_row_floor(g["model"], g["x"], grad=False, quick=ctx.quick)
    rows.append(Row("shapley speed", "kernel_shap 512", "W2-12 100 bg rows", sec, n_evals=e.n_evals,
                    floor_s=floor * e.n_evals))
    return rows


def _train(x: torch.Tensor, y: torch.Tensor, width: int, seed: int, act: type[nn.Module], steps: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], width), act(), nn.Linear(width, width), act(),
                        nn.Linear(width, 1), nn.Flatten(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def three_mlps(n_rows: int = 6, n_bg: int = 20) -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    """(name, net, explained rows, background rows) of the 3-MLP accuracy suite."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    a = data.data[:, :13]
    xa = torch.tensor((a - a.mean(0)) / a.std(0), dtype=torch.float32)
    perm = torch.randperm(len(xa), generator=torch.Generator().manual_seed(0))
    out = [("bc13 relu64", _train(xa, torch.tensor(data.target, dtype=torch.float32), 64, 0, nn.ReLU, 150),
            xa[perm[:n_rows]], xa[perm[100:100 + n_bg]])]
    rng = np.random.default_rng(1)
    b = rng.normal(size=(600, 10)).astype(np.float32)
    yb = np.sin(2 * b[:, 0]) * b[:, 1] + b[:, 2] * b[:, 3] - np.abs(b[:, 4]) + 0.5 * b[:, 5] + b[:, 6] * b[:, 7] * b[:, 8]
    bt = torch.tensor(b)
    out.append(("syn10 tanh32", _train(bt, torch.tensor((yb > 0).astype(np.float32)), 32, 1, nn.Tanh, 300),
                bt[:n_rows] * 1.3, bt[100:100 + n_bg]))
    rng = np.random.default_rng(2)
    c = rng.normal(size=(800, 14)).astype(np.float32)
    yc = c[:, :7].sum(1) * c[:, 7:].sum(1) / 3 + np.maximum(c[:, 0] + c[:, 13], 0) - c[:, 5] ** 2
    ct = torch.tensor(c)
    out.append(("syn14 gelu96", _train(ct, torch.tensor((yc > 0).astype(np.float32)), 96, 2, nn.GELU, 300),
                ct[:n_rows], ct[200:200 + n_bg]))
    return out


def _rel_l2(est: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(est - exact, axis=1) / np.linalg.norm(exact, axis=1)))


def _three_mlps(ctx: Context) -> list[Row]:
    import shap

    from unveil.attribution.shapley import ExactShapley, KernelShap

    seeds = range(2 if ctx.quick else 20)
    probs = three_mlps(2 if ctx.quick else 6)
    if ctx.quick:  # the smoke run: the 10-feature network only (exact values over 2**10 coalitions)
        probs = [probs[1]]
    rows: list[Row] = []
    for vf in ("1 bg row", "20 bg rows"):
        errs: dict[str, list[float]] = {"kernel_shap": [], "kernel_shap stratified": [], "shap": []}
        secs: dict[str, float] = {"kernel_shap": 0.0, "shap": 0.0}
        for _, net, x, bg in probs:
            ref = bg.mean(0, keepdim=True) if vf == "1 bg row" else bg
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # exact_shapley's cost warning
                exact = ExactShapley(net)(x, target=None, background=ref).extras["group_values"]

            def f(a: np.ndarray, net: nn.Module = net) -> np.ndarray:
                with torch.inference_mode():
                    return np.asarray(net(torch.as_tensor(a, dtype=torch.float32)).numpy())

            for name, ks in (("kernel_shap", KernelShap(net, n_samples=512)),
                             ("kernel_shap stratified", KernelShap(net, n_samples=512, estimator="stratified"))):
                for seed in seeds:
                    est, sec = _timed(lambda ks=ks, seed=seed, ref=ref, x=x: ks(
                        x, target=None, background=ref, seed=seed).extras["group_values"])
                    errs[name].append(_rel_l2(est, exact))
                    secs[name] = secs.get(name, 0.0) + sec
            for seed in seeds:
                np.random.seed(seed)
                ex = shap.KernelExplainer(f, ref.numpy())
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est, sec = _timed(lambda ex=ex, x=x: ex.shap_values(x.numpy(), nsamples=512, l1_reg=False, silent=True))
                errs["shap"].append(_rel_l2(est, exact))
                secs["shap"] += sec
        ref_err = float(np.mean(errs["shap"]))
        wl = f"mean rel. error over {len(seeds)} seeds x 3 MLPs, {vf}"
        for name in ("kernel_shap", "kernel_shap stratified"):
            e = float(np.mean(errs[name]))
            rows.append(Row("shapley error", f"{name} 512", wl, secs[name], "shap Kernel l1_reg=False",
                            secs["shap"], 512, note=f"err {e:.4f} vs {ref_err:.4f}, ratio {e / ref_err:.2f}",
                            extra={"err": e, "ref_err": ref_err, "err_ratio": e / ref_err}))
    return rows


def run(ctx: Context) -> list[Row]:
    return _speed(ctx) + _three_mlps(ctx) + _accuracy(ctx)
