"""Extra rows for fitting a surrogate: the black box can label as many rows as we like.

A surrogate fitted only on the user's rows has few rows to place each split where those rows
are few. Craven & Shavlik's TREPAN (1996) and Bastani et
al.'s model extraction (2017) draw new rows from a model of the data and ask the network to
label them. Here the model of the data is a kernel density estimate with a diagonal bandwidth:
each new row is a random real row with Gaussian noise of ``spread`` standard deviations on the
continuous columns, clipped to the observed range. A discrete column (few distinct values: a
flag, a count, a category code) instead takes another real row's value with probability
``spread``, so it keeps to values that occur. Fidelity is always measured on real held-out rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DISCRETE_MAX_VALUES", "discrete_columns", "synthetic_rows"]

DISCRETE_MAX_VALUES = 16


def discrete_columns(X: np.ndarray) -> np.ndarray:
    """Boolean (F,): columns with integer values only and at most 16 distinct values."""
    out = np.zeros(X.shape[1], dtype=bool)
    for j in range(X.shape[1]):
        col = X[:, j]
        if np.all(col == np.round(col)):
            out[j] = np.unique(col).size <= DISCRETE_MAX_VALUES
    return out


def synthetic_rows(X: np.ndarray, n: int, *, spread: float, seed: int) -> np.ndarray:
    """``n`` rows (float64) drawn near the rows of ``X`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    base = X[rng.integers(0, X.shape[0], n)]
    lo, hi = X.min(axis=0), X.max(axis=0)
    disc = discrete_columns(X)
    cont = ~disc
    noise = rng.standard_normal((n, int(cont.sum()))) * (X[:, cont].std(axis=0) * spread)
    base[:, cont] = np.clip(base[:, cont] + noise, lo[cont], hi[cont])
    if disc.any():
        donors = X[np.ix_(rng.integers(0, X.shape[0], n), np.flatnonzero(disc))]  # only the discrete columns
        swap = rng.random((n, int(disc.sum()))) < spread
        sub = base[:, disc]
        sub[swap] = donors[swap]
        base[:, disc] = sub
    return np.ascontiguousarray(base)
