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
    # one row: predict (1) + steps (n) + baseline (1) rows at 1 ms each; the cost model is exact
    # here, so the knob is what fits 50 ms with the early headroom (at most 15%): 50 / 1.15 - 2 = 41.5
    n = exp.params["n_steps"]
    assert exp.meta["budget"]["units"] == n
    assert 38 <= n <= 43
    assert exp.meta["budget"]["method_ms"] == pytest.approx(n + 2, rel=1e-6)
    assert exp.meta["budget"]["predicted_ms"] == pytest.approx(n + 2, rel=1e-6)
    # without example= the first call calibrates, and the caller waited for that too
    assert exp.meta["budget"]["latency_ms"] > exp.meta["budget"]["method_ms"] + 50
    assert not exp.meta["budget"]["met"] and "calibration" in exp.meta["budget"]["reasons"][0]
    assert "completeness_gap" in exp.meta["budget"]["quality"]
    exp = ex(x)  # later calls pay only their own time
    assert exp.meta["budget"]["met"] and exp.meta["budget"]["latency_ms"] < 50
    # a machine twice as slow: one miss, then a knob that fits the new speed at once
    clock.per_row = 2e-3
    met = [ex(x).meta["budget"]["met"] for _ in range(30)]
    assert met[0] is False and all(met[1:])
    assert 15 <= ex.units <= 23  # (50 / 2 - 2) = 23 fits exactly; the margin may keep a few below


def test_example_calibrates_in_the_constructor() -> None:
    """With example=, the constructor pays for warm-up and calibration: the first call is a
    call like the others and meets the budget."""
    clock = Clock(per_row=1e-3, per_call=0.0)
    model = Timed(mlp(), clock).eval()
    x = torch.randn(1, 6)
    ex = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024, example=x)
    assert clock.t > 0.1 and ex.units is not None  # the model ran in the constructor
    b = ex(x).meta["budget"]
    assert b["met"] and b["ok"] and b["latency_ms"] == pytest.approx(b["method_ms"])
    assert b["units"] >= 38


def test_a_single_slow_call_lowers_the_knob_at_once_and_briefly() -> None:
    clock = Clock(per_row=1e-3, per_call=0.0)
    model = Timed(mlp(), clock).eval()
    x = torch.randn(1, 6)
    ex = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024, example=x)
    for _ in range(30):
        ex(x)
    steady = ex.units
    assert steady is not None and steady >= 40
    clock.per_call = 0.03  # one call is held up by 30 ms per forward pass (e.g. a busy core)
    assert not ex(x).meta["budget"]["met"]
    clock.per_call = 0.0
    assert ex.units is not None and ex.units <= steady * 0.6  # the very next call is cheaper
    for _ in range(12):
        assert ex(x).meta["budget"]["met"]
    assert ex.units >= steady * 0.9  # and the knob comes back once the spike is behind


def test_a_budget_below_the_floor_says_so() -> None:
    clock = Clock(per_row=20e-3, per_call=0.0)  # 20 ms a row: 2 steps need ~80 ms
    model = Timed(mlp().eval(), clock).eval()
    ex = Explainer(model, "integrated_gradients", budget_ms=50, clock=clock, batch_size=1024)
    x = torch.randn(1, 6)
    first = ex(x)  # flagged at once; warned only once it is not a passing spike (3 calls in a row)
    assert any("minimum of 2 n_steps" in r for r in first.meta["budget"]["reasons"])
    ex(x)
    with pytest.warns(RuntimeWarning, match="cannot fit more than the minimum of 2 n_steps"):
        ex(x)
    exp = ex(x)  # warned once, flagged on every result
    b = exp.meta["budget"]
    assert b["units"] == 2 and not b["met"] and not b["ok"]
    assert any("minimum of 2 n_steps" in r for r in b["reasons"])
    assert exp.quality["budget"]["ok"] is False


def test_threads_apply_during_the_call_and_are_restored() -> None:
    seen: list[int] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return self.inner(x)

    before = torch.get_num_threads()
    ex = Explainer(Spy().eval(), "integrated_gradients", n_steps=4, threads=1)
    ex(torch.randn(1, 6))
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
    with pytest.raises(OptionError, match="threads"):
        Explainer(mlp(), "integrated_gradients", threads=0)
    with pytest.raises(OptionError, match="min_units"):
        Explainer(mlp(), "integrated_gradients", budget_ms=10, min_units=8, max_units=4)


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
