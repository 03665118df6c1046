"""The statistics of TCAV: a two-sided t-test of concept scores against random-concept scores,
Bonferroni's correction across concepts, and the number of random runs for a wanted power."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bonferroni", "outlier_p", "power", "runs_for_power", "two_sided_p"]


def two_sided_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Student's t-test (equal variances) that ``a`` and ``b`` share a mean.

    Two constant samples give 1.0 when equal and 0.0 when not (the t statistic is undefined).
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = a.size, b.size
    diff = float(a.mean() - b.mean())
    ss = float(((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum())
    if ss <= 1e-24 * max(1.0, na + nb):
        return 1.0 if abs(diff) <= 1e-12 else 0.0
    df = na + nb - 2
    se = math.sqrt(ss / df * (1.0 / na + 1.0 / nb))
    return float(min(1.0, 2.0 * stats.t.sf(abs(diff) / se, df)))


def outlier_p(value: float, null: np.ndarray) -> float:
    """One-sided p-value that ``value`` is below what the ``null`` values give: a t prediction
    interval, ``t = (mean(null) - value) / (sd(null) sqrt(1 + 1/n))`` with ``n - 1`` degrees of
    freedom. ``value`` is one new draw compared with the null's spread (not with the precision
    of its mean), so a fixed set that is unusual only by chance is not called an outlier."""
    from scipy import stats

    null = np.asarray(null, dtype=np.float64)
    n = null.size
    sd = float(null.std(ddof=1)) if n > 1 else 0.0
    gap = float(null.mean()) - float(value)
    if sd <= 1e-12 * max(1.0, abs(float(null.mean()))):
        return 0.0 if gap > 1e-12 else 1.0
    return float(stats.t.sf(gap / (sd * math.sqrt(1.0 + 1.0 / n)), n - 1))


def bonferroni(p: np.ndarray) -> np.ndarray:
    """Bonferroni-corrected p-values: ``min(1, m p)`` for ``m`` tests."""
    p = np.asarray(p, dtype=np.float64)
    return np.asarray(np.minimum(1.0, p * max(1, p.size)), dtype=np.float64)


def power(n: int, effect: float, sd: float, alpha: float) -> float:
    """Power of the two-sided two-sample t-test with ``n`` runs per group to detect a difference
    in mean score of ``effect`` when the scores' standard deviation is ``sd``."""
    from scipy import stats

    if n < 2:
        return 0.0
    df = 2 * n - 2
    nc = effect / (sd * math.sqrt(2.0 / n))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def runs_for_power(effect: float, sd: float, alpha: float, target: float, lo: int,
                   hi: int) -> int:
    """The smallest number of runs in ``[lo, hi]`` whose power reaches ``target`` (``hi`` if none)."""
    for n in range(lo, hi + 1):
        if power(n, effect, sd, alpha) >= target:
            return n
    return hi
