"""Weight and activation inspection: per-layer statistics as tables and plots.

- :func:`weight_stats`: for every module with a ``weight`` parameter, its size, norms, largest
  singular value (spectral norm; for convolutions, of the kernel reshaped to
  ``(out, in * k * k)``, which bounds but is not the operator norm of the convolution), stable
  rank and sparsity.
- :func:`activation_stats`: streamed over a data set, per layer and per unit (channel of a
  convolution, feature of a linear layer): mean, spread, range, the fraction of dead units
  (never above ``dead_tol`` on any input at any position), the fraction of inactive values and,
  for bounded activations (sigmoid, tanh, hardtanh, ReLU6, ...), the fraction of saturated ones.
- :func:`class_mean_activations`: the mean activation of every unit per class (true labels or
  the model's predictions).

Tables are :class:`Table` objects: lists of dicts with ``to_pandas()`` (pandas from the
``audit`` extra) and ``plot()`` (matplotlib from the ``viz`` extra, imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.batching import BatchSize
from ..core.hooks import layer_name
from ..core.model import Model, as_model
from ..errors import OptionError, require
from ._data import stream
from ._taps import OUTPUT, taps

__all__ = [
    "ActivationStats",
    "ClassMeans",
    "Table",
    "activation_stats",
    "class_mean_activations",
    "weight_stats",
]

_SKIP = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Flatten)


class Table(list[dict[str, Any]]):
    """Rows as dicts (one per layer, class, ...); ``to_pandas()`` and ``plot()`` on top."""

    def column(self, key: str) -> list[Any]:
        """One column as a list."""
        return [row.get(key) for row in self]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` of the rows (needs the ``audit`` extra)."""
        pd: Any = require("pandas", "audit")
        return pd.DataFrame(list(self))

    def plot(self, y: str, *, x: str = "layer", ax: Any = None) -> Any:
        """A bar chart of column ``y`` against ``x``; returns the Axes."""
        from ._plot import axes

        if not self or y not in self[0]:
            raise OptionError(f"no column {y!r}; columns: {', '.join(self[0]) if self else 'none'}")
        ax = axes(ax)
        vals = [np.nan if v is None else float(v) for v in self.column(y)]
        ax.bar(range(len(vals)), vals)
        ax.set_xticks(range(len(vals)), [str(v) for v in self.column(x)], rotation=60, ha="right")
        ax.set_ylabel(y)
        return ax


# ---------------------------------------------------------------------------- weights
def _weight_row(name: str, mod: nn.Module, w: torch.Tensor, tol: float, spectral: bool) -> dict[str, Any]:
    w = w.detach().double()
    flat = w.reshape(-1)
    row: dict[str, Any] = {
        "layer": name, "type": type(mod).__name__, "shape": tuple(w.shape),
        "n_params": int(flat.numel()), "norm": float(flat.norm()), "l1": float(flat.abs().sum()),
        "mean": float(flat.mean()), "std": float(flat.std()) if flat.numel() > 1 else 0.0,
        "max_abs": float(flat.abs().max()), "sparsity": float((flat.abs() <= tol).double().mean()),
        "spectral_norm": None, "stable_rank": None,
    }
    if spectral:
        if w.ndim >= 2:
            s = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2))
        else:  # a per-channel scale acts as a diagonal matrix
            s = row["max_abs"]
        row["spectral_norm"] = s
        row["stable_rank"] = row["norm"] ** 2 / s**2 if s > 0 else 0.0
    b = getattr(mod, "bias", None)
    row["bias_norm"] = float(b.detach().double().norm()) if isinstance(b, torch.Tensor) else None
    return row


def weight_stats(model: Any, *, spectral: bool = True, sparsity_tol: float = 0.0) -> Table:
    """Per-layer weight statistics, one row per module with a ``weight`` parameter.

    Columns: ``layer, type, shape, n_params, norm`` (Frobenius), ``l1, mean, std, max_abs,
    sparsity`` (fraction with ``|w| <= sparsity_tol``), ``spectral_norm`` (largest singular
    value of the weight as a matrix ``(out, -1)``; a 1-D weight counts as a diagonal),
    ``stable_rank`` (``norm² / spectral_norm²``) and ``bias_norm``.
    """
    m = as_model(model)
    if m.module is None:
        raise OptionError("weight_stats needs a torch.nn.Module")
    if sparsity_tol < 0 or not math.isfinite(sparsity_tol):
        raise OptionError(f"sparsity_tol must be a finite number >= 0, got {sparsity_tol!r}")
    rows = Table()
    with torch.no_grad():
        for name, mod in m.module.named_modules():
            w = mod._parameters.get("weight")
            if isinstance(w, torch.Tensor) and w.numel():
                rows.append(_weight_row(name or type(mod).__name__, mod, w, sparsity_tol, spectral))
    return rows


# ---------------------------------------------------------------------------- activations
_BOUNDS: dict[type[nn.Module], tuple[float, float]] = {
    nn.Sigmoid: (0.0, 1.0), nn.Tanh: (-1.0, 1.0), nn.Softsign: (-1.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0), nn.ReLU6: (0.0, 6.0), nn.Softmax: (0.0, 1.0),
}


def _bounds_of(mod: nn.Module) -> tuple[float, float] | None:
    if isinstance(mod, nn.Hardtanh):  # also ReLU6's base class
        return float(mod.min_val), float(mod.max_val)
    for kind, b in _BOUNDS.items():
        if isinstance(mod, kind):
            return b
    return None


def _units(a: torch.Tensor) -> torch.Tensor:
    """(N, U, P): units on axis 1 (channels or features), positions after."""
    return a.reshape(a.shape[0], a.shape[1] if a.ndim > 1 else 1, -1).double()


@dataclass
class _Acc:
    bounds: tuple[float, float] | None
    kind: str
    n: float = 0.0
    s: torch.Tensor | None = None
    s2: torch.Tensor | None = None
    lo: torch.Tensor | None = None
    hi: torch.Tensor | None = None
    inactive: float = 0.0
    saturated: float = 0.0
    count: float = 0.0

    def add(self, a: torch.Tensor, dead_tol: float, sat_tol: float) -> None:
        u = _units(a)
        s, s2 = u.sum((0, 2)), (u * u).sum((0, 2))
        lo, hi = u.amin((0, 2)), u.amax((0, 2))
        if self.s is None:
            self.s, self.s2, self.lo, self.hi = s, s2, lo, hi
        else:
            assert self.s2 is not None and self.lo is not None and self.hi is not None
            self.s, self.s2 = self.s + s, self.s2 + s2
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        self.n += u.shape[0] * u.shape[2]
        self.count += u.numel()
        self.inactive += float((u <= dead_tol).sum())
        if self.bounds is not None:
            low, high = self.bounds
            eps = sat_tol * (high - low)
            self.saturated += float(((u <= low + eps) | (u >= high - eps)).sum())


@dataclass
class ActivationStats:
    """Per-unit activation statistics of several layers over a data set.

    ``unit_mean``, ``unit_std``, ``unit_min``, ``unit_max`` and ``dead`` map each layer to a
    (U,) array over its units; :meth:`table` gives one row per layer.
    """

    layers: list[str]
    unit_mean: dict[str, np.ndarray]
    unit_std: dict[str, np.ndarray]
    unit_min: dict[str, np.ndarray]
    unit_max: dict[str, np.ndarray]
    dead: dict[str, np.ndarray]
    rows: Table
    n_seen: int

    def table(self) -> Table:
        """Columns ``layer, type, units, mean, std, min, max, dead_fraction,
        inactive_fraction, saturation`` (``None`` for unbounded activations)."""
        return self.rows

    def plot(self, key: str = "dead_fraction", ax: Any = None) -> Any:
        """A bar chart of one column of :meth:`table` per layer."""
        return self.rows.plot(key, ax=ax)


def _default_layers(module: nn.Module) -> list[str]:
    return [n for n, mod in module.named_modules() if n and not list(mod.children()) and not isinstance(mod, _SKIP)]


def activation_stats(
    model: Any,
    data: Any,
    *,
    layers: Sequence[str | nn.Module] | None = None,
    dead_tol: float = 0.0,
    saturation_tol: float = 0.01,
    batch_size: BatchSize = "auto",
) -> ActivationStats:
    """Activation statistics per layer and unit, streamed over ``data`` in batches.

    Parameters
    ----------
    model
        A ``torch.nn.Module``.
    data
        A tensor (N, ...) or an iterable of batches (tensors or ``(x, y)`` tuples).
    layers
        Dotted layer names; default every leaf module except identities, dropout and flatten.
    dead_tol
        A unit is dead when it never exceeds this value; values at or below it are inactive.
    saturation_tol
        For bounded activations, a value within this fraction of the range from either bound
        counts as saturated.
    """
    m = _module_model(model, "activation_stats")
    assert m.module is not None
    names = (_default_layers(m.module) if layers is None
             else [layer_name(m.module, n) for n in layers])
    if not names:
        raise OptionError("no layers to inspect; pass layers=[...] with dotted names")
    accs = {n: _Acc(_bounds_of(m.layer(n)), type(m.layer(n)).__name__) for n in names}

    def consume(_start: int, acts: dict[str, torch.Tensor], _x: torch.Tensor, _y: Any) -> None:
        for n in names:
            accs[n].add(acts[n], dead_tol, saturation_tol)

    with m.guard(), taps(m, names, need_output=False) as run, torch.inference_mode():
        seen = stream(m, data, run, consume, batch_size=batch_size, key=("activation_stats", *names))
    return _summarise(names, accs, seen, dead_tol)


def _summarise(names: list[str], accs: dict[str, _Acc], seen: int, dead_tol: float) -> ActivationStats:
    means, stds, los, his, dead = {}, {}, {}, {}, {}
    rows = Table()
    for n in names:
        a = accs[n]
        assert a.s is not None and a.s2 is not None and a.lo is not None and a.hi is not None
        mu = a.s / a.n
        var = (a.s2 / a.n - mu * mu).clamp_min(0.0)
        means[n], stds[n] = mu.cpu().numpy(), var.sqrt().cpu().numpy()
        los[n], his[n] = a.lo.cpu().numpy(), a.hi.cpu().numpy()
        dead[n] = (a.hi <= dead_tol).cpu().numpy()
        total_mean = float(a.s.sum() / (a.n * len(a.s)))
        total_var = float(a.s2.sum() / (a.n * len(a.s))) - total_mean**2
        rows.append({
            "layer": n, "type": a.kind, "units": len(mu), "mean": total_mean,
            "std": math.sqrt(max(total_var, 0.0)), "min": float(a.lo.min()), "max": float(a.hi.max()),
            "dead_fraction": float(dead[n].mean()), "inactive_fraction": a.inactive / a.count,
            "saturation": None if a.bounds is None else a.saturated / a.count,
        })
    return ActivationStats(names, means, stds, los, his, dead, rows, seen)


def _module_model(model: Any, what: str) -> Model:
    m = as_model(model)
    if m.module is None:
        raise OptionError(f"{what} reads layers with hooks and needs a torch.nn.Module")
    return m


# ---------------------------------------------------------------------------- per class
@dataclass
class ClassMeans:
    """Mean activation of each unit of ``layer`` per class: ``values`` (K, U), ``counts`` (K,).

    Classes with no example have NaN rows. ``by`` says whether classes are the true labels or
    the model's predictions.
    """

    layer: str
    values: np.ndarray
    counts: np.ndarray
    by: str
    class_names: list[str] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def table(self) -> Table:
        """Long format: one row per (class, unit) with ``class, unit, mean, count``."""
        rows = Table()
        for k, row in enumerate(self.values):
            name = self.class_names[k] if self.class_names else k
            for u, v in enumerate(row):
                rows.append({"class": name, "unit": u, "mean": float(v), "count": int(self.counts[k])})
        return rows

    def plot(self, ax: Any = None) -> Any:
        """A heat map, classes by units; returns the Axes."""
        from ._plot import axes

        ax = axes(ax)
        im = ax.imshow(self.values, aspect="auto", cmap="viridis")
        ax.figure.colorbar(im, ax=ax)
        ax.set_xlabel("unit")
        ax.set_ylabel(f"class ({self.by})")
        if self.class_names:
            ax.set_yticks(range(len(self.class_names)), self.class_names)
        ax.set_title(f"mean activation of {self.layer!r} per class")
        return ax


def class_mean_activations(
    model: Any,
    data: Any,
    *,
    layer: str | nn.Module,
    labels: Any = None,
    n_classes: int | None = None,
    class_names: list[str] | None = None,
    batch_size: BatchSize = "auto",
) -> ClassMeans:
    """Mean activation of every unit of ``layer`` (channels averaged over positions) per class.

    Classes are ``labels`` (with a tensor of data), the second item of each ``(x, y)`` batch of
    an iterable, or else the model's predicted class.
    """
    m = _module_model(model, "class_mean_activations")
    layer = layer_name(m.module, layer)
    need_output = labels is None
    used_predictions: list[bool] = []
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}

    def consume(_start: int, acts: dict[str, torch.Tensor], _x: torch.Tensor, y: torch.Tensor | None) -> None:
        u = _units(acts[layer]).mean(2)  # (B, U)
        used_predictions.append(y is None)
        if y is None:
            y = acts[OUTPUT].argmax(1) if acts[OUTPUT].ndim == 2 else (acts[OUTPUT] > 0).long()
        for c in torch.unique(y).tolist():
            sel = y == c
            part = u[sel].sum(0)
            sums[c] = sums[c] + part if c in sums else part
            counts[c] = counts.get(c, 0) + int(sel.sum())

    with m.guard(), taps(m, [layer], need_output=need_output) as run, torch.inference_mode():
        stream(m, data, run, consume, batch_size=batch_size, key=("class_means", layer, need_output), labels=labels)
    predicted = all(used_predictions)
    if any(c < 0 for c in counts):
        raise OptionError("class labels must be integers >= 0")
    k = max(max(counts) + 1, n_classes or 0, len(class_names or []))
    width = len(next(iter(sums.values())))
    values = np.full((k, width), np.nan)
    cnt = np.zeros(k, dtype=np.int64)
    for c, s in sums.items():
        values[c] = (s / counts[c]).cpu().numpy()
        cnt[c] = counts[c]
    return ClassMeans(layer, values, cnt, "predicted" if predicted else "labels", class_names)
