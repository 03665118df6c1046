"""Synthetic fit rows: where they are drawn, that they never reach the held-out figures, and
that a surrogate of a model seen through few rows gains fidelity from them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import unveil.surrogate as us
from unveil.errors import OptionError
from unveil.surrogate._augment import discrete_columns, synthetic_rows


def _table(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 4] = rng.integers(0, 2, n)  # a flag
    X[:, 5] = rng.integers(0, 5, n)  # a count
    return X


def test_synthetic_rows_stay_in_range_and_keep_discrete_values():
    X = _table(300)
    assert discrete_columns(X).tolist() == [False] * 4 + [True, True]
    S = synthetic_rows(X, 5000, spread=0.3, seed=1)
    assert S.shape == (5000, 6)
    assert np.all(S >= X.min(0)) and np.all(S <= X.max(0))
    assert set(np.unique(S[:, 4])) <= {0.0, 1.0} and set(np.unique(S[:, 5])) <= set(range(5))
    # the noise on a continuous column is spread x its std around a real row
    gaps = np.abs(S[:, :4, None] - X[None, :, :4].transpose(0, 2, 1)).min(axis=2)
    assert np.median(gaps) < 0.3 and np.array_equal(S, synthetic_rows(X, 5000, spread=0.3, seed=1))


def _box(X: np.ndarray) -> np.ndarray:
    """A smooth black box: an oblique boundary that a shallow tree can only approximate."""
    return np.stack([np.zeros(len(X)), X[:, 0] + 0.7 * X[:, 1] - 0.5 * X[:, 2] + 0.3 * X[:, 4]], axis=1)


def test_synthetic_rows_fit_but_never_measure():
    X = _table(400)
    sur = us.distill(_box, X, max_depth=4, seed=0, augment="auto")
    assert sur.n_fit == 300 and sur.n_synthetic == 2700
    assert sur.held_out["n_rows"] == 100
    d = sur._data
    direct = float((sur.predict(d.X_val) == _box(d.X_val).argmax(1)).mean())
    assert sur.fidelity() == pytest.approx(direct, abs=1e-12)
    assert sur.train_fidelity == pytest.approx(float((sur.predict(d.X_fit) == _box(d.X_fit).argmax(1)).mean()))
    assert us.distill(_box, X).n_synthetic == 0  # off by default
    big = us.distill(_box, _table(30_000), augment="auto", max_depth=2)
    assert big.n_synthetic == 0  # 22,500 real fit rows are already past the 20,000 of "auto"


def test_few_rows_gain_fidelity_from_synthetic_rows_at_equal_size():
    gains = []
    for seed in range(6):
        X = _table(160, seed)
        size: dict[str, Any] = {"max_depth": None, "max_leaves": 16, "seed": seed}
        plain = us.distill(_box, X, **size)
        grown = us.distill(_box, X, augment="auto", **size)
        assert plain.complexity <= 16 and grown.complexity <= 16
        probe = _table(4000, 100 + seed)  # fresh rows: fidelity on the data's distribution
        gains.append(grown.fidelity(probe) - plain.fidelity(probe))
    assert np.mean(gains) > 0.02 and sum(g > 0 for g in gains) >= 5, gains


def test_bad_augment_options():
    X = _table(100)
    with pytest.raises(OptionError, match="augment must be"):
        us.distill(_box, X, augment=-1)
    with pytest.raises(OptionError, match="spread must be"):
        us.distill(_box, X, spread=0.0)
