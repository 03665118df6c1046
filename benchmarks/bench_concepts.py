"""Concepts: unveil's TCAV vs Captum's TCAV (``captum.concept.TCAV``, BSD) on the same inputs.

Workload: the marked-digits CNN (the zoo's digits CNN trained where every 7 carries a corner
mark), layer ``features.6`` (64x8x8 = 4,096 activations), class 7's 45 test digits. Concept
"corner mark": 50 digits of other classes with the mark. 50 random runs: random sets of 50
unmarked digits of other classes (the same sets for both libraries: unveil's draws), and for the
null, a second random set per run tested against each random set. Captum runs its default
classifier (scikit-learn's ``SGDClassifier``, two thirds of each set for training) and writes
activations and CAVs to a temporary folder, as it does; its p-value is the same two-sided t-test
computed here on its scores. unveil fits L2-regularised logistic regressions exactly (the
random control is extra work unveil does that Captum does not). Timed once each after a warm-up
on 1-3 runs; ``--quick``: 4 random runs and 10 inputs.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from typing import Any

import numpy as np
import torch

from ._common import Context, Row

LAYER = "features.6"


def _captum(model: torch.nn.Module, x: torch.Tensor, concept: torch.Tensor,
            randoms: list[torch.Tensor], nulls: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, float]:
    from captum.concept import TCAV, Concept

    def c(i: int, name: str, t: torch.Tensor) -> Concept:
        return Concept(i, name, torch.utils.data.DataLoader(t, batch_size=64))

    k = len(randoms)
    cm = c(0, "corner_mark", concept)
    rs = [c(1 + i, f"random_{i}", r) for i, r in enumerate(randoms)]
    qs = [c(1 + k + i, f"null_{i}", q) for i, q in enumerate(nulls)]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        t0 = time.perf_counter()
        tcav = TCAV(model, [LAYER], save_path=tmp)
        sets = [[cm, r] for r in rs] + [[q, r] for q, r in zip(qs, rs)]
        out = tcav.interpret(x, sets, target=7)
        secs = time.perf_counter() - t0
    s = np.array([float(out[f"0-{1 + i}"][LAYER]["sign_count"][0]) for i in range(k)])
    null = np.array([float(out[f"{1 + k + i}-{1 + i}"][LAYER]["sign_count"][0]) for i in range(k)])
    return s, null, secs


def run(ctx: Context) -> list[Row]:
    from unveil.concepts import tcav
    from unveil.concepts._stats import two_sided_p
    from unveil.concepts.tcav import _draw, canonical_order
    from unveil.zoo import corner_mark_examples, marked_digits_cnn, marked_digits_data
    from unveil.zoo import random_digit_examples as rde

    n = 4 if ctx.quick else 50
    model = marked_digits_cnn()
    data = marked_digits_data()
    x = data.X_test[data.y_test == 7][: 10 if ctx.quick else None]
    mark = corner_mark_examples(50, seed=0)
    pool = rde(600, seed=1)
    tcav(model, {"corner mark": mark}, x[:5], 7, LAYER, pool, n_random=2)  # warm-up
    t0 = time.perf_counter()
    ours = tcav(model, {"corner mark": mark}, x, 7, LAYER, pool, n_random=n)
    secs = time.perf_counter() - t0
    rows = [Row("concepts", "tcav", f"marked digits CNN, {LAYER}, {len(x)} inputs, {n} random",
                secs, note=f"unveil: corner mark {ours.scores[0]:.2f} (p={ours.p_corrected[0]:.2g}), "
                           f"random {ours.random_scores.mean():.2f}, control p={ours.control_p:.2f}",
                extra={"unveil": ours.to_dict()})]
    try:
        import captum  # noqa: F401
    except ImportError:
        return rows
    canon = pool[torch.as_tensor(canonical_order(pool))]
    draws = [_draw(len(pool), 50, 0, i) for i in range(n)]
    randoms = [canon[torch.as_tensor(d[0])] for d in draws]
    nulls = [canon[torch.as_tensor(d[1])] for d in draws]
    _captum(model, x[:5], mark, randoms[:1], nulls[:1])  # warm-up
    s, null, csecs = _captum(model, x, mark, randoms, nulls)
    p = two_sided_p(s, null)
    extra: dict[str, Any] = {"unveil": ours.to_dict(), "captum": {
        "scores": s.tolist(), "null": null.tolist(), "p": p, "seconds": csecs}}
    rows[0] = Row("concepts", "tcav", rows[0].workload, secs, "captum TCAV (SGD)", csecs,
                  note=rows[0].note + f" | captum: corner mark {s.mean():.2f} (p={p:.2g}), "
                                      f"random {null.mean():.2f}", extra=extra)
    return rows
