"""Evaluation metrics: unveil vs Quantus 0.6.0 on the same 64 digit images and explanations.

- Deletion / insertion by pixel flipping (one pixel a step, 1024 steps, zero baseline) against
  Quantus's ``PixelFlipping(features_in_step=1)``: the same perturbed inputs and model calls
  (Quantus has no insertion curve; its pixel-flipping loop is the reference cost). Also unveil's
  default 50-step curve against Quantus's default, which is the 1024-step one.
- Max-sensitivity (200 uniform draws of radius 0.2, as Quantus's defaults) against
  ``MaxSensitivity``, both re-explaining with unveil's saliency (so the metric's machinery is
  what differs).
- A cascading randomisation check of saliency on 16 digit images (unveil's ``sanity_check``),
  and Quantus's ``MPRT`` on the same images for reference.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch

from ._common import Context, Row, median_time, per_row_floor, use_torchvision_stub, w3


def _saliency(model: Any, inputs: Any, targets: Any, **_kw: Any) -> np.ndarray:
    import unveil as uv

    t = torch.as_tensor(np.asarray(targets))
    return uv.explain(model, torch.as_tensor(np.asarray(inputs)), method="saliency", target=t).values


def _once(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timed_counted(fn: Any, model: torch.nn.Module) -> tuple[float, int, Any]:
    """Seconds of one run of ``fn(model)``, the model rows it evaluated, and its result."""
    from unveil.core.model import Model

    m = Model(model)
    t0 = time.perf_counter()
    out = fn(m)
    return time.perf_counter() - t0, m.n_evals, out


def _counted(fn: Any, model: torch.nn.Module) -> tuple[Any, int]:
    from unveil.core.model import Model

    m = Model(model)
    out = fn(m)
    return out, m.n_evals


def run(ctx: Context) -> list[Row]:
    use_torchvision_stub()
    warnings.filterwarnings("ignore")
    import quantus

    import unveil as uv
    from unveil.metrics import deletion, insertion, max_sensitivity, sanity_check

    q = ctx.quick  # smoke run: a few rows of each, no floors
    n = 2 if q else 64
    step = 512 if q else 1
    tuned = 512 if q else 16  # 64 steps: Quantus needs a step dividing 1024
    n_draws = 1 if q else 200
    model, x_all = w3(64)
    x, x16 = x_all[:n], x_all[: 2 if q else 16]
    exp = uv.explain(model, x, method="saliency")
    y, a = exp.targets, exp.values
    rows: list[Row] = []
    reps = ctx.repeats(3)
    fwd_floor = float("nan") if q else per_row_floor(model, x, grad=False)
    grad_floor = float("nan") if q else per_row_floor(model, x, grad=True)
    time_ref = (lambda f: median_time(f, repeats=1, warmup=0)) if ctx.quick else _once
    wl = f"W3 digits x{n}"

    def q_pf(features_in_step: int) -> float:
        pf = quantus.PixelFlipping(features_in_step=features_in_step, perturb_baseline=0.0,
                                   disable_warnings=True)
        return time_ref(lambda: pf(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a,
                                   device="cpu", batch_size=64))

    # ---- pixel flipping: the same one-pixel steps (Quantus's default) on both sides
    q_pf_s = q_pf(step)
    results: dict[str, Any] = {}
    for name, fn in (("deletion", deletion), ("insertion", insertion)):
        def ours(m: Any = None, f: Any = fn) -> Any:
            return f(model if m is None else m, exp, step=step, baseline="zeros")

        fn(model, exp[:2], step=step, baseline="zeros")  # warm-up on two images: the long run once
        t, evals, results[name] = _timed_counted(ours, model)
        rows.append(Row("metrics", f"{name} pixel flipping", wl, t, "quantus PixelFlipping", q_pf_s,
                        n_evals=evals, floor_s=None if q else evals * fwd_floor,
                        note=f"both {1024 // step} steps of {step} px (Quantus default)"))
    # ---- unveil's default 50-step curve, against Quantus's default and against Quantus tuned
    steps = 2 if q else 50
    t = median_time(lambda: deletion(model, exp, n_steps=steps), repeats=reps)
    coarse, evals = _counted(lambda m: deletion(m, exp, n_steps=steps), model)
    gap = float(np.abs(coarse.per_sample - results["deletion"].per_sample).mean())  # what the 50 steps cost in accuracy
    rows.append(Row("metrics", "deletion defaults", wl, t, "quantus PixelFlipping", q_pf_s,
                    n_evals=evals, floor_s=None if q else evals * fwd_floor,
                    note=f"unveil 50 steps vs Quantus default 1024; mean |AUC diff| {gap:.4f}"))
    t_tuned, evals, _ = _timed_counted(lambda m: deletion(m, exp, step=tuned, baseline="zeros"), model)
    rows.append(Row("metrics", f"deletion {1024 // tuned} steps", wl, t_tuned,
                    f"quantus PixelFlipping step={tuned}", q_pf(tuned), n_evals=evals,
                    floor_s=None if q else evals * fwd_floor, note="both tuned to the same coarse steps"))

    # ---- max-sensitivity: uniform draws of radius 0.2, re-explained by the same saliency
    ms = quantus.MaxSensitivity(nr_samples=n_draws, lower_bound=0.2, disable_warnings=True)
    q_ms_s = time_ref(lambda: ms(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a,
                                 explain_func=_saliency, device="cpu", batch_size=64))
    for draws, note in ((n_draws, "same draws (Quantus default)"), (1 if q else 50, "unveil default")):
        t = median_time(lambda d=draws: max_sensitivity(model, exp, n_samples=d, radius=0.2), repeats=reps)
        rows.append(Row("metrics", f"max_sensitivity {draws} draws", wl, t, f"quantus MaxSensitivity {n_draws}",
                        q_ms_s, n_evals=n * draws, floor_s=None if q else n * draws * grad_floor, note=note))

    # ---- cascading randomisation of saliency on 16 images
    t = median_time(lambda: sanity_check(model, x16, method="saliency"), repeats=reps)
    e16 = uv.explain(model, x16, method="saliency")
    mprt = quantus.MPRT(disable_warnings=True)
    q_s = median_time(lambda: mprt(model=model, x_batch=x16.numpy(), y_batch=e16.targets,
                                   a_batch=e16.values, explain_func=_saliency, device="cpu"),
                      repeats=1 if q else 3)
    rows.append(Row("metrics", "sanity_check cascading", f"W3 digits x{len(x16)}", t, "quantus MPRT", q_s,
                    n_evals=len(x16) * 7, note="unveil: 4 measures + random logit; Quantus: Spearman"))
    return rows
