"""Explanations for a stream of single inputs, optionally within a latency budget.

:class:`Explainer` builds its method once and reuses it (the chunk-size probe and any model
rewrite are paid on the first call only). With ``budget_ms=`` it chooses the method's budget
knob (``n_steps`` for path methods, ``n_samples`` for sampling methods) from a timed
calibration, keeps a running estimate of the cost per unit, and records in each Explanation
the knob it chose, the latency reached and the quality that bought (completeness gap or
standard error).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..core.registry import get_method
from ..errors import OptionError

__all__ = ["Explainer"]

_KNOBS = ("n_steps", "n_samples")
_MET_SHARE = 0.95  # the share of calls the budget mode aims to keep within the budget


class Explainer:
    """A reusable explainer for single inputs or small batches.

    Parameters
    ----------
    model
        The model (anything :class:`unveil.Model` accepts).
    method
        A registered method name.
    budget_ms
        Target latency per call in milliseconds, or ``None`` to use the method's options as
        given. Budget mode is exempt from the same-seed-same-answer rule: the knob follows the
        measured speed of the machine.
    min_units, max_units
        Bounds of the chosen ``n_steps`` / ``n_samples``.
    max_gap
        The quality the budget must still buy: the largest relative completeness gap
        (``|delta| / |f(x) - f(b)|``, for methods that report one) accepted before a result is
        flagged (default 0.1). Every budget-mode result says whether the budget was met and the
        quality reached in ``exp.meta["budget"]`` (``met``, ``ok``, ``reasons``, the latency
        including, on the first call, the calibration) and, when not, ``exp.quality["budget"]``.
    clock
        A function returning seconds (injected in tests); ``time.perf_counter`` by default.
    options
        The method's options, as it declares them (``uv.options(method)``); an unknown or
        ill-typed one raises :class:`~unveil.errors.OptionError` here.
    """

    def __init__(self, model: Any, method: str = "integrated_gradients", *, budget_ms: float | None = None,
                 min_units: int = 2, max_units: int = 256, clock: Callable[[], float] = time.perf_counter,
                 max_gap: float = 0.1, **options: Any) -> None:
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
        self.model, self.init, self.budget_ms, self.clock = model, init, budget_ms, clock
        self.min_units, self.max_units, self.max_gap = min_units, max_units, max_gap
        self._methods: dict[int, Any] = {}
        self._fixed = 0.0  # seconds per call that do not scale with the knob
        self._per_unit: float | None = None  # seconds per knob unit
        self._recent: collections.deque[float] = collections.deque(maxlen=32)  # per-unit costs seen
        self.units: int | None = None

    def _method(self, units: int | None) -> Any:
        key = -1 if units is None else units
        if key not in self._methods:
            opts = dict(self.init)
            if units is not None and self.knob is not None and not self._knob_in_call:
                opts[self.knob] = units
            self._methods[key] = self.info.cls(self.model, **opts)
        return self._methods[key]

    def _timed(self, x: Any, units: int | None, **kw: Any) -> tuple[Explanation, float]:
        if units is not None and self.knob is not None and self._knob_in_call:
            kw = {**kw, self.knob: units}
        t0 = self.clock()
        exp = self._method(units)(x, **{**self.call_options, **kw})
        return exp, self.clock() - t0

    def calibrate(self, x: Any, **kw: Any) -> int:
        """Time the method at two knob values on ``x`` and choose the knob for the budget."""
        assert self.budget_ms is not None
        lo = self.min_units
        hi = max(lo * 4, 8)
        self._timed(x, lo, **kw)  # warm-up: chunk probe, rewrites, allocator
        _, t_lo = self._timed(x, lo, **kw)
        _, t_hi = self._timed(x, hi, **kw)
        self._per_unit = max((t_hi - t_lo) / (hi - lo), 1e-9)
        self._fixed = max(t_lo - self._per_unit * lo, 0.0)
        self.units = self._choose()
        return self.units

    def _choose(self) -> int:
        """The largest knob that fits the budget at the 95th percentile of the recent per-unit
        costs (jitter and a slower machine both show there), or, for the first 8 calls, at the
        running estimate with 10% headroom."""
        assert self.budget_ms is not None and self._per_unit is not None
        if len(self._recent) >= 8:
            room, per_unit = self.budget_ms / 1e3 - self._fixed, float(np.quantile(self._recent, _MET_SHARE))
        else:
            room, per_unit = self.budget_ms / 1e3 * 0.9 - self._fixed, self._per_unit
        return int(np.clip(np.floor(room / per_unit), self.min_units, self.max_units))

    def __call__(self, x: Any, *, target: Any = "predicted", **kw: Any) -> Explanation:
        if self.budget_ms is None:
            return self._method(None)(x, target=target, **{**self.call_options, **kw})  # type: ignore[no-any-return]
        start = self.clock()
        if self.units is None:
            self.calibrate(x, target=target, **kw)
        assert self.units is not None
        units = self.units
        exp, seconds = self._timed(x, units, target=target, **kw)
        total = self.clock() - start  # what the caller waited: the first call's calibration too
        # running estimate of the per-unit cost and its recent spread, then the next knob
        assert self._per_unit is not None
        observed = max(seconds - self._fixed, 1e-9) / units
        self._recent.append(observed)
        self._per_unit = 0.7 * self._per_unit + 0.3 * observed
        self.units = self._choose()
        quality = _quality(exp)
        reasons = self._reasons(total, units, quality)
        exp.meta["budget"] = {
            "budget_ms": self.budget_ms,
            "latency_ms": total * 1e3,
            "method_ms": seconds * 1e3,
            "met": total * 1e3 <= self.budget_ms,
            "ok": not reasons,
            "reasons": reasons,
            "knob": self.knob,
            "units": units,
            "quality": quality,
        }
        if reasons:
            exp.quality["budget"] = {"ok": False, "reasons": reasons}
        exp.params[str(self.knob)] = units
        return exp

    def _reasons(self, total: float, units: int, quality: dict[str, float]) -> list[str]:
        """Why this result falls short of what the budget promises, in words (empty if it
        does not)."""
        assert self.budget_ms is not None
        out = []
        if total * 1e3 > self.budget_ms:
            out.append(f"took {total * 1e3:.0f} ms, over the budget of {self.budget_ms:g} ms"
                       + (" (the first call includes the calibration)" if len(self._recent) == 1 else ""))
        need = self._fixed + (self._per_unit or 0.0) * self.min_units
        if units <= self.min_units and need * 1e3 > self.budget_ms:
            out.append(f"the budget cannot fit more than the minimum of {self.min_units} "
                       f"{self.knob} on this machine now (that alone needs about {need * 1e3:.0f} "
                       "ms); raise budget_ms or run on a less loaded machine")
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
