"""Budgeted explainers, with an injected clock that charges a fixed cost per model row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _util import mlp
from unveil.errors import OptionError
from unveil.scale import Explainer


class Clock:
    """Time advances only when the model runs: ``per_row`` seconds per evaluated row."""

    def __init__(self, per_row: float, per_call: float = 0.0) -> None:
        self.t = 0.0
        self.per_row = per_row
        self.per_call = per_call

    def __call__(self) -> float:
        return self.t


class Timed(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, clock: Clock) -> None:
        super().__init__()
        self.inner, self.clock = inner, clock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.t += self.clock.per_call + self.clock.per_row * x.shape[0]
        return self.inner(x)


def test_budget_picks_steps_that_fit() -> None:
    clock = Clock(per_row=1e-3, per_call=0.0)
    model = Timed(mlp(), clock).eval()
    ex = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024)
    x = torch.randn(1, 6)
    exp = ex(x)
    # one row: predict (1) + steps (n) + baseline (1) rows at 1 ms each -> n <= 0.9*50 - 2
    n = exp.params["n_steps"]
    assert exp.meta["budget"]["units"] == n
    assert 40 <= n <= 43
    assert exp.meta["budget"]["method_ms"] == pytest.approx(n + 2, rel=1e-6)
    # the caller waited for the calibration too (warm-up and two timed runs at 2 and 8 steps)
    calibration = (2 + 2) + (2 + 2) + (8 + 2)
    assert exp.meta["budget"]["latency_ms"] == pytest.approx(calibration + n + 2, rel=1e-6)
    assert not exp.meta["budget"]["met"] and "calibration" in exp.meta["budget"]["reasons"][0]
    assert "completeness_gap" in exp.meta["budget"]["quality"]
    exp = ex(x)  # later calls pay only their own time
    assert exp.meta["budget"]["met"] and exp.meta["budget"]["latency_ms"] < 50
    # a slower machine gets fewer steps after the running estimate updates
    clock.per_row = 2e-3
    for _ in range(8):
        exp = ex(x)
    assert 19 <= exp.params["n_steps"] <= 22


def test_a_budget_below_the_floor_says_so() -> None:
    clock = Clock(per_row=20e-3, per_call=0.0)  # 20 ms a row: 2 steps need ~80 ms
    model = Timed(mlp().eval(), clock).eval()
    ex = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024)
    x = torch.randn(1, 6)
    ex(x)
    exp = ex(x)
    b = exp.meta["budget"]
    assert b["units"] == 2 and not b["met"] and not b["ok"]
    assert any("minimum of 2 n_steps" in r for r in b["reasons"])
    assert exp.quality["budget"]["ok"] is False


def test_a_poor_completeness_gap_is_flagged() -> None:
    clock = Clock(per_row=1e-3, per_call=0.0)
    model = Timed(mlp().eval(), clock).eval()
    ex = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024,
                   max_gap=0.0)  # no gap accepted: any real gap is reported
    x = torch.randn(1, 6)
    ex(x)
    exp = ex(x)
    b = exp.meta["budget"]
    assert b["met"] and b["quality"]["completeness_gap"] > 0
    assert not b["ok"] and "completeness gap" in b["reasons"][0]
    ok = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024)
    ok(x)
    good = ok(x).meta["budget"]
    assert good["ok"] and good["reasons"] == [] and good["quality"]["completeness_gap"] <= 0.1


def test_fixed_options_without_budget_and_errors() -> None:
    ex = Explainer(mlp().eval(), "integrated_gradients", n_steps=7)
    exp = ex(torch.randn(2, 6))
    assert exp.params["n_steps"] == 7 and "budget" not in exp.meta
    with pytest.raises(OptionError, match="no steps or samples"):
        Explainer(mlp(), "saliency", budget_ms=10)
    with pytest.raises(OptionError, match="positive"):
        Explainer(mlp(), "integrated_gradients", budget_ms=0)
    assert np.isfinite(exp.values).all()


def test_budget_mode_absorbs_recurring_slow_calls() -> None:
    """Every tenth call runs 40% slower (a periodic background job): after a short warm-up the
    knob leaves room for it, so at least 95% of calls meet the budget."""
    clock = Clock(per_row=1e-3, per_call=0.0)
    model = Timed(mlp(), clock).eval()
    ex = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024)
    x = torch.randn(1, 6)
    met = []
    for i in range(120):
        clock.per_row = 1.4e-3 if i % 10 == 9 else 1e-3
        met.append(ex(x).meta["budget"]["met"])
    assert sum(met[20:]) >= 0.95 * len(met[20:])
    assert ex.units is not None and ex.units >= 25  # not starved: the budget is still used
