"""Inputs the model has not seen: a check of each explained row against the model's own data.

A network asked about a row far outside its training data still answers, often with full
confidence, and every attribution method then explains that answer convincingly. Nothing in the
maps says the row was, say, in millimetres where the model learned centimetres. So when unveil
knows what the model's data looked like — ``uv.Model(model, reference=rows)``, the zoo's
training rows, or the ``background=`` rows of the call — it checks every explained row against
it and records the verdict in ``exp.quality["in_distribution"]``.

The rule, chosen to be explainable to a reader in one sentence: a feature is *outside* when its
value lies beyond the range the reference rows span, widened by ``margin`` (default 10 %) of that
range on each side; a row is out of distribution when any feature is outside. Tables are checked
column by column (the offending columns are named, with the value and the range seen); images
channel by channel on their pixel values; token ids are not checked (any id of the vocabulary is
a valid input).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = ["Reference", "as_reference", "describe_outside"]

MAX_LISTED = 5  # offending features listed per row
SAMPLE_ROWS = 100  # reference rows kept to stand for the data (e.g. as a background)


class Reference:
    """The ranges of the model's data, to flag explained rows that lie outside them.

    Parameters
    ----------
    rows
        Rows of the data the model was trained on (or is meant for): (M, F) for tables,
        (M, C, H, W) or (M, C, L) for images and signals, at least 2 rows.
    margin
        Fraction of each range added on each side before a value counts as outside (0.1).
    feature_names
        Column names, used in the messages.
    """

    def __init__(self, rows: Any, *, margin: float = 0.1,
                 feature_names: list[str] | None = None) -> None:
        arr = np.asarray(rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else rows,
                         dtype=np.float64)
        if arr.ndim < 2 or arr.shape[0] < 2:
            raise InputError(f"reference rows must be a batch of at least 2 rows, got shape "
                             f"{arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError("reference rows contain NaN or infinite values")
        if margin < 0:
            raise InputError(f"margin must be >= 0, got {margin}")
        self.shape = tuple(arr.shape[1:])
        self.margin = float(margin)
        self.feature_names = feature_names
        per = self._per_feature(arr)
        self.low, self.high = per.min(axis=0), per.max(axis=0)
        self.n_rows = int(arr.shape[0])
        keep = np.unique(np.linspace(0, arr.shape[0] - 1, min(arr.shape[0], SAMPLE_ROWS)).astype(int))
        self.sample = torch.as_tensor(arr[keep], dtype=torch.float32)  # evenly spaced rows

    def background(self, like: torch.Tensor) -> torch.Tensor:
        """Up to 100 of the reference rows (evenly spaced), as ``like``'s dtype and device: the
        data-derived "absent" values perturbation and Shapley methods average over."""
        return self.sample.to(dtype=like.dtype, device=like.device)

    def _per_feature(self, arr: np.ndarray) -> np.ndarray:
        """(rows, features): columns of a table; for images every pixel of a channel pooled."""
        if arr.ndim == 2:
            return arr
        # (N, C, ...) -> one "feature" per channel, pixels pooled as extra rows
        c = arr.shape[1]
        return np.moveaxis(arr, 1, -1).reshape(-1, c)

    def _name(self, j: int) -> str:
        if len(self.shape) > 1:
            return f"channel {j}"
        if self.feature_names is not None and j < len(self.feature_names):
            return str(self.feature_names[j])
        return f"feature {j}"

    def check(self, x: Any, *, feature_names: list[str] | None = None) -> dict[str, Any]:
        """The verdict for each row of ``x``: ``{"ok": [...], "rows_outside": [...], "outside":
        {row: [{"feature", "value", "low", "high"}, ...]}, "rule": ...}``."""
        arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x,
                         dtype=np.float64)
        if tuple(arr.shape[1:]) != self.shape:
            raise InputError(f"rows of shape {tuple(arr.shape[1:])} cannot be compared with "
                             f"reference rows of shape {self.shape}")
        names = feature_names or self.feature_names
        span = self.high - self.low
        pad = self.margin * np.where(span > 0, span, np.maximum(np.abs(self.high), 1.0))
        lo, hi = self.low - pad, self.high + pad
        n = arr.shape[0]
        per = self._per_feature(arr).reshape(n, -1, self.low.size)  # (rows, pixels or 1, features)
        low_v, high_v = per.min(axis=1), per.max(axis=1)  # (rows, features)
        bad = (low_v < lo) | (high_v > hi)
        # how far out, in ranges of the data: the farthest-out features are listed first
        dist = np.maximum(lo - low_v, high_v - hi) / np.maximum(span, 1e-12)
        ok = [bool(v) for v in ~bad.any(axis=1)]
        outside: dict[str, list[dict[str, Any]]] = {}
        for i in np.flatnonzero(~np.asarray(ok)):  # only the flagged rows are described
            cols = np.flatnonzero(bad[i])
            order = cols[np.argsort(-dist[i, cols], kind="stable")][:MAX_LISTED]
            outside[str(i)] = [self._entry(j, per[i, :, j], names) for j in order]
        return {
            "ok": ok,
            "rows_outside": [i for i, good in enumerate(ok) if not good],
            "outside": outside,
            "rule": (f"each feature within the range of {self.n_rows} reference rows, widened by "
                     f"{self.margin:.0%} of that range on each side"),
        }

    def _entry(self, j: int, values: np.ndarray, names: list[str] | None) -> dict[str, Any]:
        name = (str(names[j]) if names is not None and len(self.shape) == 1 and j < len(names)
                else self._name(j))
        v = float(values.max() if values.max() > self.high[j] else values.min())
        if values.size > 1:  # an image channel: say how many pixels
            lo_pad = self.low[j] - self.margin * (self.high[j] - self.low[j])
            hi_pad = self.high[j] + self.margin * (self.high[j] - self.low[j])
            n_out = int(((values < lo_pad) | (values > hi_pad)).sum())
            return {"feature": name, "value": v, "low": float(self.low[j]),
                    "high": float(self.high[j]), "pixels": n_out}
        return {"feature": name, "value": v, "low": float(self.low[j]), "high": float(self.high[j])}


def as_reference(rows: Any, *, feature_names: list[str] | None = None) -> Reference | None:
    """A :class:`Reference` from rows (a Reference passes through; ``None`` stays ``None``)."""
    if rows is None or isinstance(rows, Reference):
        return rows
    return Reference(rows, feature_names=feature_names)


def describe_outside(verdict: dict[str, Any], row: int) -> str | None:
    """One sentence for a reader about row ``row`` (``None`` when it is within the data)."""
    items = verdict.get("outside", {}).get(str(row))
    if not items:
        return None
    parts = []
    for it in items:
        if "pixels" in it:
            parts.append(f"{it['pixels']} pixels of {it['feature']} at up to {it['value']:.4g} "
                         f"(the data spans {it['low']:.4g} to {it['high']:.4g})")
        else:
            parts.append(f"{it['feature']} = {it['value']:.4g} (the data spans {it['low']:.4g} "
                         f"to {it['high']:.4g})")
    return ("This input lies outside the data the model knows: " + "; ".join(parts)
            + ". The model's answer, and every explanation of it, may be meaningless here; "
            "check the input's units and scale.")
