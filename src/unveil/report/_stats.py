"""Small statistics the report states in words: agreement between methods, concentration and
location of the evidence in an image."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["Agreement", "agreement", "concentration", "region", "spearman", "top_k_overlap"]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two vectors (average ranks for ties); NaN if either is
    constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of the ``k`` largest entries of ``a`` that are also among the ``k`` largest of ``b``."""
    k = max(1, min(k, a.size))
    ta = set(np.argsort(-np.ravel(a), kind="stable")[:k].tolist())
    tb = set(np.argsort(-np.ravel(b), kind="stable")[:k].tolist())
    return len(ta & tb) / k


@dataclass
class Agreement:
    """Pairwise agreement of methods on one sample (on ``|attribution|``)."""

    methods: list[str]
    rank: np.ndarray  # (M, M) Spearman
    top_k: np.ndarray  # (M, M) top-k overlap
    k: int
    size: int = 0  # how many features each map has

    def mean_rank(self) -> float:
        """Mean Spearman over the pairs (NaN with fewer than two methods)."""
        m = len(self.methods)
        vals = [self.rank[i, j] for i, j in itertools.combinations(range(m), 2)]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def extreme_pairs(self) -> tuple[tuple[str, str, float], tuple[str, str, float]] | None:
        """The least and the most similar pair of methods."""
        pairs = [
            (self.methods[i], self.methods[j], float(self.rank[i, j]))
            for i, j in itertools.combinations(range(len(self.methods)), 2)
            if np.isfinite(self.rank[i, j])
        ]
        if not pairs:
            return None
        return min(pairs, key=lambda p: p[2]), max(pairs, key=lambda p: p[2])


def agreement(maps: dict[str, np.ndarray], *, k: int | None = None) -> Agreement:
    """Agreement between methods' maps of one sample (flat, comparable vectors)."""
    names = list(maps)
    m = len(names)
    size = min((v.size for v in maps.values()), default=0)
    k = k or max(1, min(10, size // 10 or 1))
    rank = np.eye(m)
    top = np.eye(m)
    for i, j in itertools.combinations(range(m), 2):
        a, b = maps[names[i]], maps[names[j]]
        if a.size != b.size:
            rank[i, j] = rank[j, i] = top[i, j] = top[j, i] = np.nan
            continue
        rank[i, j] = rank[j, i] = spearman(a, b)
        top[i, j] = top[j, i] = top_k_overlap(a, b, k)
    return Agreement(names, rank, top, k, size)


def concentration(heat: np.ndarray, share: float = 0.1) -> float | None:
    """Fraction of the positive attribution held by the top ``share`` of elements (None when
    there is no positive attribution)."""
    pos = np.clip(np.ravel(heat), 0, None)
    total = float(pos.sum())
    if total <= 0:
        return None
    k = max(1, int(round(share * pos.size)))
    return float(np.sort(pos)[::-1][:k].sum() / total)


_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "centre", "right")


def region(heat: np.ndarray) -> str | None:
    """Where the positive attribution of an (H, W) map lies, in words (thirds of the image)."""
    pos = np.clip(heat, 0, None)
    total = float(pos.sum())
    if total <= 0 or heat.ndim != 2:
        return None
    h, w = heat.shape
    cy = float((pos.sum(axis=1) * np.arange(h)).sum() / total) / max(h - 1, 1)
    cx = float((pos.sum(axis=0) * np.arange(w)).sum() / total) / max(w - 1, 1)
    r, c = _ROWS[min(2, int(cy * 3))], _COLS[min(2, int(cx * 3))]
    if r == "middle" and c == "centre":
        return "the centre"
    if r == "middle":
        return f"the {c} side"
    if c == "centre":
        return f"the {r} part"
    return f"the {r} {c}"
