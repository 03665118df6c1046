"""Explanations for a stream of single inputs, optionally within a latency budget.

:class:`Explainer` builds its method once and reuses it. With ``budget_ms=`` it chooses the
method's budget knob (``n_steps`` for path methods, ``n_samples`` for sampling methods) from a
cost model measured on this machine, and records in each Explanation the knob it chose, the
latency reached (timed around the whole call) and the quality that bought (completeness gap or
standard error).

Where budgeted calls used to run over, and what is done about each:

* the first call paid for the warm-up and the calibration: given ``example=``, the constructor
  does both, so no call does;
* the chunk-size probe of ``batch_size="auto"`` ran again whenever the knob reached a new size:
  the calibration runs the method twice at twice the knob it expects, so the probe is finished
  for the sizes the calls will use;
* the knob followed a running mean of per-step costs, in which noise on a call with few steps
  weighs most: the knob now comes from a cost model ``latency = a + b * units`` fitted on
  medians of repeated timings, scaled by a high quantile (98%) of the ratios of observed to
  predicted latency over recent calls, so jitter and a slower machine both leave room;
* after a miss, the next calls assume the miss's ratio at least, so the knob drops at once;
* several torch threads on a shared machine made a call wait for a busy core (a 15 ms call
  took up to a second): ``threads=1`` runs each call single-threaded (and restores torch's
  setting afterwards).

When even the smallest knob does not fit, every result says so (``meta["budget"]["ok"]`` is
false with a reason) and, once three calls in a row could not fit it, one ``RuntimeWarning``
is issued.
"""

from __future__ import annotations

import collections
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..core.explanation import Explanation
from ..core.model import as_model
from ..core.registry import get_method
from ..errors import OptionError

__all__ = ["Explainer"]

_KNOBS = ("n_steps", "n_samples")
_QUANTILE = 0.98  # the quantile of observed/predicted latency the knob leaves room for
_EARLY = 1.15  # extra headroom with no ratio seen yet, fading to none once the window is full
_WINDOW = 64
_AFTER_MISS = 8  # calls that keep at least a miss's ratio
_WARN_AFTER = 3  # consecutive calls the minimum knob must not fit before the RuntimeWarning


class Explainer:
    """A reusable explainer for single inputs or small batches.

    Parameters
    ----------
    model
        The model (anything :class:`unveil.Model` accepts).
    method
        A registered method name.
    budget_ms
        Target latency per call in milliseconds, as the caller times it (the whole call), or
        ``None`` to use the method's options as given. The knob is chosen so that about 98% of
        calls fit on a machine whose speed does not change abruptly. Budget mode is exempt from
        the same-seed-same-answer rule: the knob follows the measured speed of the machine.
    example
        An input like the ones to come (e.g. one row or one image, with its batch axis). Given,
        the constructor warms the method up and, in budget mode, calibrates on it; otherwise the
        first call does, and takes that much longer (its result says so).
    threads
        Torch's intra-op thread count during each call (restored afterwards), or ``None`` to
        leave it as it is. On a machine shared with other work, ``threads=1`` keeps single
        inputs from waiting for busy cores.
    min_units, max_units
        Bounds of the chosen ``n_steps`` / ``n_samples``.
    max_gap
        The quality the budget must still buy: the largest relative completeness gap
        (``|delta| / |f(x) - f(b)|``, for methods that report one) accepted before a result is
        flagged (default 0.1). Every budget-mode result says whether the budget was met and the
        quality reached in ``exp.meta["budget"]`` (``met``, ``ok``, ``reasons``, the latency
        including, on an uncalibrated first call, the calibration) and, when not,
        ``exp.quality["budget"]``.
    clock
        A function returning seconds (injected in tests); ``time.perf_counter`` by default.
    options
        The method's options, as it declares them (``uv.options(method)``); an unknown or
        ill-typed one raises :class:`~unveil.errors.OptionError` here.
    """

    def __init__(self, model: Any, method: str = "integrated_gradients", *, budget_ms: float | None = None,
                 example: Any = None, threads: int | None = None, min_units: int = 2, max_units: int = 256,
                 clock: Callable[[], float] = time.perf_counter, max_gap: float = 0.1, **options: Any) -> None:
        self.info = get_method(method)
        init, self.call_options = self.info.split_options(options)  # OptionError before any work
        if "target" in self.call_options:
            raise OptionError(f"{method!r}: target= is an argument of each call, not an option "
                              "of the Explainer")
        declared = self.info.options
        self.knob = next((k for k in _KNOBS if k in declared), None)
        self._knob_in_call = self.knob is not None and declared[self.knob].where == "call"
        if budget_ms is not None:
            if budget_ms <= 0:
                raise OptionError(f"budget_ms must be positive, got {budget_ms}")
            if self.knob is None:
                raise OptionError(
                    f"{method!r} has no steps or samples to trade for speed; budget_ms applies to "
                    "methods with n_steps or n_samples"
                )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise OptionError(f"threads must be a positive int or None, got {threads!r}")
        if not (isinstance(min_units, int) and isinstance(max_units, int) and 1 <= min_units <= max_units):
            raise OptionError(f"need 1 <= min_units <= max_units, got {min_units} and {max_units}")
        # one wrapped model for every knob value: its fingerprint and probes are shared
        self.model, self.init, self.budget_ms, self.clock = as_model(model), init, budget_ms, clock
        self.threads = threads
        self.min_units, self.max_units, self.max_gap = min_units, max_units, max_gap
        self._methods: dict[int, Any] = {}
        self._fixed = 0.0  # a: seconds per call that do not scale with the knob
        self._per_unit: float | None = None  # b: seconds per knob unit
        self._ratios: collections.deque[float] = collections.deque(maxlen=_WINDOW)  # observed / predicted
        self._floor: float = 1.0  # ratio the next calls assume at least (raised by a miss)
        self._floor_calls = 0
        self._calls = 0
        self._warned = False
        self._short = 0  # consecutive results whose minimum knob did not fit
        self.units: int | None = None
        if example is not None:
            if budget_ms is None:
                self(example)  # warm-up: the chunk probe, rewrites, the allocator
            else:
                self.calibrate(example)

    # -- running the method --------------------------------------------------------------------
    def _method(self, units: int | None) -> Any:
        key = -1 if units is None else units
        if key not in self._methods:
            opts = dict(self.init)
            if units is not None and self.knob is not None and not self._knob_in_call:
                opts[self.knob] = units
            self._methods[key] = self.info.cls(self.model, **opts)
        return self._methods[key]

    def _run(self, x: Any, units: int | None, kw: dict[str, Any]) -> Explanation:
        if units is not None and self.knob is not None and self._knob_in_call:
            kw = {**kw, self.knob: units}
        method = self._method(units)
        if self.threads is None:
            return method(x, **{**self.call_options, **kw})  # type: ignore[no-any-return]
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return method(x, **{**self.call_options, **kw})  # type: ignore[no-any-return]
        finally:
            torch.set_num_threads(before)

    def _timed(self, x: Any, units: int | None, kw: dict[str, Any]) -> float:
        t0 = self.clock()
        self._run(x, units, kw)
        return self.clock() - t0

    # -- the cost model ------------------------------------------------------------------------
    def predict_ms(self, units: int) -> float:
        """The latency the cost model expects at ``units`` before any margin, in ms."""
        if self._per_unit is None:
            raise RuntimeError("the Explainer is not calibrated yet (pass example= or call it once)")
        return (self._fixed + self._per_unit * units) * 1e3

    def calibrate(self, x: Any, *, target: Any = "predicted", **kw: Any) -> int:
        """Warm the method up on ``x``, fit ``latency = a + b * units`` and choose the knob.

        Medians of three timings at the smallest knob and at a larger one give the line; the
        method then runs twice at twice the knob that line allows (so the chunk-size probe has
        measured every size the calls will use), and those timings refine the fit. The spread
        of the timings around the line seeds the margin. Returns the chosen knob.
        """
        if self.budget_ms is None:
            raise RuntimeError("calibrate() chooses the knob of a budget; this Explainer has none")
        kw = {"target": target, **kw}
        lo = self.min_units
        mid = min(self.max_units, max(4 * lo, 8))
        self._run(x, lo, kw)  # warm-up: chunk probe, model rewrites, allocator
        self._run(x, mid, kw)
        points: list[tuple[int, float]] = []
        for units in (lo, mid):
            points += [(units, self._timed(x, units, kw)) for _ in range(3)]
        self._fit(points)
        self._ratios.clear()
        hi = min(self.max_units, 2 * self._fit_units(1.0))
        if hi > mid:
            points += [(hi, self._timed(x, hi, kw)) for _ in range(2)]
            self._fit(points)
        for units, t in points:
            self._ratios.append(t / max(self._fixed + self._per_unit * units, 1e-12))  # type: ignore[operator]
        self.units = self._choose()
        return self.units

    def _fit(self, points: list[tuple[int, float]]) -> None:
        """Least squares through the medians of the timings at each knob value."""
        by: dict[int, list[float]] = {}
        for u, t in points:
            by.setdefault(u, []).append(t)
        us = np.array(sorted(by), dtype=float)
        ts = np.array([float(np.median(by[int(u)])) for u in us])
        b = float(np.polyfit(us, ts, 1)[0]) if len(us) > 1 else ts[0] / us[0]
        b = max(b, 1e-9)
        self._per_unit = b
        self._fixed = max(float(np.median(ts - b * us)), 0.0)

    def _margin(self) -> float:
        """The ratio of latency to the model's prediction that the next call should allow for."""
        r = list(self._ratios)
        # few ratios say little about the tail: extra headroom that fades as the window fills
        q = float(np.quantile(r, _QUANTILE)) if r else 1.0
        q *= 1.0 + (_EARLY - 1.0) * max(0.0, 1.0 - len(r) / _WINDOW)
        if self._floor_calls > 0:
            q = max(q, self._floor)
        return q

    def _fit_units(self, margin: float) -> int:
        assert self.budget_ms is not None and self._per_unit is not None
        room = self.budget_ms / 1e3 / margin - self._fixed
        units = math.floor(room / self._per_unit) if room > 0 else self.min_units
        return int(np.clip(units, self.min_units, self.max_units))

    def _choose(self) -> int:
        """The largest knob whose predicted latency, times the margin, fits the budget."""
        return self._fit_units(self._margin())

    # -- calls ---------------------------------------------------------------------------------
    def __call__(self, x: Any, *, target: Any = "predicted", **kw: Any) -> Explanation:
        if self.budget_ms is None:
            return self._run(x, None, {"target": target, **kw})
        start = self.clock()
        calibrating = self.units is None
        if calibrating:
            self.calibrate(x, target=target, **kw)
        assert self.units is not None and self._per_unit is not None
        units = self.units
        t0 = self.clock()
        exp = self._run(x, units, {"target": target, **kw})
        quality = _quality(exp)
        exp.params[str(self.knob)] = units
        end = self.clock()
        total, seconds = end - start, end - t0  # total: what the caller waited (a calibration too)
        self._learn(seconds, units)
        reasons = self._reasons(total, units, quality, calibrating)
        exp.meta["budget"] = {
            "budget_ms": self.budget_ms,
            "latency_ms": total * 1e3,
            "method_ms": seconds * 1e3,
            "predicted_ms": self.predict_ms(units),
            "met": total * 1e3 <= self.budget_ms,
            "ok": not reasons,
            "reasons": reasons,
            "knob": self.knob,
            "units": units,
            "quality": quality,
        }
        if reasons:
            exp.quality["budget"] = {"ok": False, "reasons": reasons}
        return exp

    def _learn(self, seconds: float, units: int) -> None:
        """Record how this call compared with the prediction and choose the next knob."""
        assert self.budget_ms is not None
        predicted = max(self.predict_ms(units) / 1e3, 1e-12)
        ratio = seconds / predicted
        self._ratios.append(ratio)
        self._calls += 1
        self._floor_calls = max(self._floor_calls - 1, 0)
        if seconds * 1e3 > self.budget_ms:  # a miss: assume at least this ratio for a while
            self._floor = max(ratio * 1.1, self._floor if self._floor_calls else 0.0)
            self._floor_calls = _AFTER_MISS
        self.units = self._choose()

    def _reasons(self, total: float, units: int, quality: dict[str, float], calibrating: bool) -> list[str]:
        """Why this result falls short of what the budget promises, in words (empty if it
        does not)."""
        assert self.budget_ms is not None
        out = []
        if total * 1e3 > self.budget_ms:
            out.append(f"took {total * 1e3:.0f} ms, over the budget of {self.budget_ms:g} ms"
                       + (" (this call includes the calibration; pass example= to calibrate in the "
                          "constructor)" if calibrating else ""))
        ratios = sorted(self._ratios)
        need = self.predict_ms(self.min_units) * (ratios[len(ratios) // 2] if ratios else 1.0)
        if units <= self.min_units and need > self.budget_ms:
            msg = (f"the budget cannot fit more than the minimum of {self.min_units} {self.knob} on this "
                   f"machine now (that alone needs about {need:.0f} ms); raise budget_ms or run on a less "
                   "loaded machine")
            out.append(msg)
            self._short += 1
            if self._short >= _WARN_AFTER and not self._warned:  # once, and not for a passing spike
                self._warned = True
                warnings.warn(f"Explainer(budget_ms={self.budget_ms:g}): {msg}", RuntimeWarning, stacklevel=3)
        else:
            self._short = 0
        gap = quality.get("completeness_gap")
        if gap is not None and gap > self.max_gap:
            out.append(f"completeness gap {gap:.2f} above {self.max_gap:g}: with {units} {self.knob} "
                       "the attributions do not add up to the change in score; raise budget_ms")
        return out


def _quality(exp: Explanation) -> dict[str, float]:
    """What the budget bought: the relative completeness gap, or the mean standard error."""
    q: dict[str, float] = {}
    if exp.delta is not None and exp.outputs is not None and exp.baseline_outputs is not None:
        scale = np.abs(exp.outputs - exp.baseline_outputs) + 1e-12
        q["completeness_gap"] = float(np.mean(np.abs(exp.delta) / scale))
    if exp.stderr is not None:
        q["mean_stderr"] = float(np.mean(exp.stderr))
    return q
