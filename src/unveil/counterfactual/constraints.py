"""Hard constraints on counterfactual rows, in the table's own units and names.

A :class:`Constraints` names what may change and how: immutable columns, one-direction columns
(``increasing``: age only goes up), ranges, integer columns, categorical columns (values from an
allowed set, by default the values observed in the data) and a feasibility function of the rows.
:meth:`Space.project` maps any row onto the set these define (except the feasibility function,
which is only checked); :meth:`Space.violations` counts what a row breaks. Candidates are
projected after every search step and verified once more before they are returned, so a row
breaking any constraint is never reported as a valid counterfactual.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OptionError

__all__ = ["KINDS", "Constraints", "Space", "as_constraints"]

#: The kinds of constraint a row can break, in the order of :meth:`Space.violations`' columns.
KINDS = ("immutable", "direction", "range", "integer", "categorical", "feasible")
Feasible = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class Constraints:
    """What a counterfactual may change, by column name (or index).

    immutable : columns that never change (a protected attribute, a date of birth)
    increasing, decreasing : columns that may move one way only (``age`` only up)
    ranges : ``{column: (low, high)}``, inclusive; ``None`` for an open side
    integer : columns that take whole numbers
    categorical : columns whose values come from an allowed set: a list of columns (the values
        observed in the data) or ``{column: values}``
    feasible : a function of rows (M, F) in the table's units returning M booleans, for rules
        that tie columns together (``years_employed <= age - 16``)
    """

    immutable: Sequence[str | int] = ()
    increasing: Sequence[str | int] = ()
    decreasing: Sequence[str | int] = ()
    ranges: Mapping[str | int, tuple[float | None, float | None]] = field(default_factory=dict)
    integer: Sequence[str | int] = ()
    categorical: Sequence[str | int] | Mapping[str | int, Sequence[float] | None] = ()
    feasible: Feasible | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-safe summary (the feasibility function by its name)."""
        cats = self.categorical
        return {
            "immutable": [str(c) for c in self.immutable],
            "increasing": [str(c) for c in self.increasing],
            "decreasing": [str(c) for c in self.decreasing],
            "ranges": {str(k): [v[0], v[1]] for k, v in self.ranges.items()},
            "integer": [str(c) for c in self.integer],
            "categorical": ({str(k): None if v is None else [float(x) for x in v] for k, v in cats.items()} if isinstance(cats, Mapping)
                            else [str(c) for c in cats]),
            "feasible": None if self.feasible is None else getattr(self.feasible, "__name__", "function"),
        }


def as_constraints(spec: Constraints | Mapping[str, Any] | None) -> Constraints:
    """A :class:`Constraints` from itself, a mapping of its fields, or ``None`` (no constraint)."""
    if spec is None:
        return Constraints()
    if isinstance(spec, Constraints):
        return spec
    if isinstance(spec, Mapping):
        known = set(Constraints.__dataclass_fields__)
        bad = [k for k in spec if k not in known]
        if bad:
            close = difflib.get_close_matches(str(bad[0]), sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise OptionError(f"unknown constraint kind {bad[0]!r}{hint}. The kinds are {sorted(known)}")
        return Constraints(**dict(spec))
    raise OptionError(f"constraints must be a Constraints, a dict of its fields or None, got {type(spec).__name__}")


def _column(name: str | int, names: Sequence[str], kind: str) -> int:
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if not -len(names) <= int(name) < len(names):
            raise OptionError(f"{kind}: column index {name} is out of range for {len(names)} columns")
        return int(name) % len(names)
    if str(name) in names:
        return list(names).index(str(name))
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise OptionError(f"{kind}: no column named {name!r}{hint}. The columns are {list(names)}")


@dataclass
class Space:
    """The constraints resolved against a table: per-column arrays, ready to project rows."""

    names: list[str]
    free: np.ndarray  # bool (F,): may change
    direction: np.ndarray  # int (F,): +1 only up, -1 only down, 0 either
    low: np.ndarray  # (F,), -inf when open
    high: np.ndarray  # (F,), +inf when open
    integer: np.ndarray  # bool (F,)
    categories: dict[int, np.ndarray]  # column -> sorted allowed values
    feasible: Feasible | None = None

    @classmethod
    def build(cls, spec: Constraints, names: Sequence[str], data: np.ndarray) -> Space:
        """Resolve ``spec`` on columns ``names``; categorical sets default to ``data``'s values."""
        f = len(names)
        free, direction = np.ones(f, bool), np.zeros(f, np.int64)
        low, high, integer = np.full(f, -np.inf), np.full(f, np.inf), np.zeros(f, bool)
        for c in spec.immutable:
            free[_column(c, names, "immutable")] = False
        for c in spec.increasing:
            direction[_column(c, names, "increasing")] = 1
        for c in spec.decreasing:
            j = _column(c, names, "decreasing")
            if direction[j] == 1:
                raise OptionError(f"column {names[j]!r} is both increasing and decreasing; make it immutable instead")
            direction[j] = -1
        for c, bounds in spec.ranges.items():
            j = _column(c, names, "ranges")
            if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
                raise OptionError(f"ranges[{c!r}] must be (low, high), got {bounds!r}")
            lo, hi = (-np.inf if bounds[0] is None else float(bounds[0]), np.inf if bounds[1] is None else float(bounds[1]))
            if lo > hi:
                raise OptionError(f"ranges[{c!r}]: low {lo} is above high {hi}")
            low[j], high[j] = lo, hi
        for c in spec.integer:
            integer[_column(c, names, "integer")] = True
        cats: dict[int, np.ndarray] = {}
        items = (spec.categorical.items() if isinstance(spec.categorical, Mapping)
                 else ((c, None) for c in spec.categorical))
        for c, values in items:
            j = _column(c, names, "categorical")
            allowed = np.unique(data[:, j] if values is None else np.asarray(values, dtype=np.float64))
            if allowed.size == 0:
                raise OptionError(f"categorical[{c!r}] allows no value")
            cats[j] = allowed
        if spec.feasible is not None and not callable(spec.feasible):
            raise OptionError(f"feasible must be a function of rows (M, F) -> M booleans, got {spec.feasible!r}")
        return cls(list(names), free, direction, low, high, integer, cats, spec.feasible)

    # -- projection ---------------------------------------------------------------------------
    def _tensors(self, dev: torch.device, dt: torch.dtype) -> dict[str, Any]:
        key = (str(dev), dt)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            def t(a: np.ndarray) -> torch.Tensor:
                return torch.as_tensor(a, device=dev, dtype=dt)

            cache[key] = {
                "free": torch.as_tensor(self.free, device=dev), "up": torch.as_tensor(self.direction == 1, device=dev),
                "down": torch.as_tensor(self.direction == -1, device=dev), "low": t(self.low), "high": t(self.high),
                "int": torch.as_tensor(self.integer, device=dev), "ilow": t(np.ceil(self.low)),
                "ihigh": t(np.floor(self.high)),
                "cats": {j: t(a[(a >= self.low[j]) & (a <= self.high[j])]) for j, a in self.categories.items()},
            }
        out: dict[str, Any] = cache[key]
        return out

    def project(self, z: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``z`` (M, F) moved onto the constraint set around the originals ``x0`` (M, F):
        immutable columns reset, one-direction columns clipped at the original, ranges clipped,
        integers rounded, categorical values snapped to an allowed value (the nearest; for a
        one-direction column the nearest on its side)."""
        c = self._tensors(z.device, z.dtype)
        z = torch.where(c["free"], z, x0)
        z = torch.where(c["up"], torch.maximum(z, x0), z)
        z = torch.where(c["down"], torch.minimum(z, x0), z)
        z = torch.minimum(torch.maximum(z, c["low"]), c["high"])
        if self.integer.any():
            r = torch.minimum(torch.maximum(torch.round(z), c["ilow"]), c["ihigh"])
            z = torch.where(c["int"], r, z)
        # ranges and rounding never move a fixed column, nor a one-direction one the wrong way
        # (an input already outside a range, or between two whole numbers, keeps its value)
        z = torch.where(c["up"], torch.maximum(z, x0), z)
        z = torch.where(c["down"], torch.minimum(z, x0), z)
        z = torch.where(c["free"], z, x0)
        if not self.categories:
            return z
        z = z.clone()
        for j, a in c["cats"].items():
            if a.numel() == 0 or not self.free[j]:
                continue
            col = z[:, j].contiguous()
            hi_i = torch.searchsorted(a, col).clamp(max=a.numel() - 1)  # first allowed >= col
            lo_i = (torch.searchsorted(a, col, right=True) - 1).clamp(min=0)  # last allowed <= col
            above, below = a[hi_i], a[lo_i]
            if self.direction[j] == 1:
                snapped = above
            elif self.direction[j] == -1:
                snapped = below
            else:
                snapped = torch.where((above - col).abs() < (col - below).abs(), above, below)
            z[:, j] = snapped
        return z

    # -- verification ---------------------------------------------------------------------------
    def violations(self, rows: np.ndarray, x0: np.ndarray) -> np.ndarray:
        """(M, len(KINDS)) booleans: which kind of constraint each row (float64, table units)
        breaks. Ranges, integers and allowed values bind the columns a row changes (an input's
        own value outside them is not the counterfactual's doing)."""
        tol = 1e-9 * np.maximum(1.0, np.abs(x0))
        moved = np.abs(rows - x0) > tol
        out = np.zeros((rows.shape[0], len(KINDS)), bool)
        out[:, 0] = (moved & ~self.free).any(axis=1)
        out[:, 1] = (((rows < x0 - tol) & (self.direction == 1)) | ((rows > x0 + tol) & (self.direction == -1))).any(axis=1)
        # a value left as the input has it breaks no range, integer or categorical constraint:
        # those say what a column may be changed to
        out[:, 2] = (moved & ((rows < self.low - tol) | (rows > self.high + tol))).any(axis=1)
        out[:, 3] = (moved & self.integer & (np.abs(rows - np.round(rows)) > 1e-9)).any(axis=1)
        for j, allowed in self.categories.items():
            out[:, 4] |= moved[:, j] & ~np.isin(rows[:, j], allowed)
        if self.feasible is not None and rows.shape[0]:
            ok = np.asarray(self.feasible(rows.copy()))
            if ok.shape != (rows.shape[0],):
                raise InputError(f"feasible must return one boolean per row ({rows.shape[0]}), got shape {ok.shape}")
            out[:, 5] = ~ok.astype(bool)
        return out

    def snap(self, rows: np.ndarray, x0: np.ndarray) -> np.ndarray:
        """:meth:`project` in float64 numpy: exact integers and allowed values for verification."""
        return self.project(torch.from_numpy(rows), torch.from_numpy(x0)).numpy()

    def mutable_count(self) -> int:
        """Columns that may change."""
        return int(self.free.sum())
