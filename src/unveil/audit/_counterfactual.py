"""Counterfactual flips: set the sensitive column to another group's value and count changed
predictions; optionally move the proxy columns to the other group too.

Every (row, other group) pair is one counterfactual row. Proxies are moved by quantile mapping
(the monotone transport of one group's distribution of a column onto the other's): a row at
the q-th quantile of its own group gets the q-th quantile of the other group, as a person "like
this one, but from the other group" would plausibly look (cf. Black, Yeom & Fredrikson, 2020,
"FlipTest: fairness testing via optimal transport", which transports all columns jointly).
All pairs are built before chunking and scored through one batched pass, by the same scorer
the counterfactual search uses (:func:`unveil.counterfactual.decision.score_rows`): a flip is
the simplest counterfactual, one column set by hand instead of searched for.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.batching import BatchSize
from ..core.model import Model
from ..counterfactual.decision import score_rows
from ..surrogate.blackbox import class_labels

__all__ = ["flip_rates", "quantile_map"]


def quantile_map(values: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map ``values`` (drawn from ``source``) to the same quantiles of ``target``."""
    src = np.sort(source)
    q = (np.searchsorted(src, values, side="left") + np.searchsorted(src, values, side="right")) / (2.0 * src.size)
    return np.asarray(np.quantile(target, np.clip(q, 0.0, 1.0)), dtype=np.float64)


def _pairs(s: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, other group value) for every row and every group it is not in."""
    rows = np.repeat(np.arange(s.size), groups.size)
    vals = np.tile(groups, s.size)
    keep = s[rows] != vals
    return rows[keep], vals[keep]


def _moved_proxies(X: np.ndarray, col: int, proxies: list[int], rows: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """(P, len(proxies)): each pair's proxy values mapped from its group to the other group."""
    s = X[:, col]
    out = np.array(X[rows][:, proxies], dtype=np.float64)
    for a in np.unique(s):
        for b in np.unique(s):
            sel = (s[rows] == a) & (vals == b)
            if a == b or not sel.any():
                continue
            for k, j in enumerate(proxies):
                out[sel, k] = quantile_map(X[rows[sel], j], X[s == a, j], X[s == b, j])
    return out


def flip_rates(
    m: Model, X: np.ndarray, col: int, proxies: list[int], labels: np.ndarray, threshold: float | None,
    batch_size: BatchSize,
) -> tuple[float, float]:
    """(flip rate with only the sensitive column changed, flip rate with the proxies moved too)."""
    groups = np.unique(X[:, col])
    rows, vals = _pairs(X[:, col], groups)
    xt = m.prepare(torch.from_numpy(X))
    rt = torch.from_numpy(rows).to(xt.device)
    vt = torch.from_numpy(vals).to(device=xt.device, dtype=xt.dtype)
    moved = torch.from_numpy(_moved_proxies(X, col, proxies, rows, vals)).to(device=xt.device, dtype=xt.dtype)
    pt = torch.tensor(proxies, dtype=torch.long, device=xt.device)
    n = rows.size

    def build(a: int, b: int) -> torch.Tensor:
        r = torch.arange(a, b, device=xt.device)
        pair = r % n
        out = xt[rt[pair]].clone()
        out[:, col] = vt[pair]
        with_proxies = r >= n  # the second half of the rows also moves the proxies
        if pt.numel() and bool(with_proxies.any()):
            idx = torch.nonzero(with_proxies).flatten()
            out[idx.unsqueeze(1), pt.unsqueeze(0)] = moved[pair[idx]]
        return out

    scores = score_rows(m, 2 * n, build, batch_size=batch_size, key=("flip", X.shape[1]))
    cf = class_labels(scores, threshold, what="the audited model")
    changed = cf != np.concatenate([labels[rows], labels[rows]])
    return float(changed[:n].mean()), float(changed[n:].mean())
