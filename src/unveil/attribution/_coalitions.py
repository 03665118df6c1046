"""Coalitions and Shapley estimators on value tables (no model calls here).

- :func:`all_coalitions` / :func:`exact_from_table`: every coalition and the exact Shapley
  values (Shapley, 1953) from the full table of values.
- :func:`kernel_design`: the coalitions of KernelSHAP (Lundberg & Lee, 2017): paired
  (antithetic) coalitions (Covert & Lee, 2021), size strata filled exactly when the budget
  allows and sampled without replacement otherwise, weighted by the Shapley kernel.
  ``sampling="leverage"`` allocates the budget uniformly over coalition sizes, the leverage
  scores of the regression (Musco & Witter, 2025, "Provably accurate Shapley value estimation
  via leverage score sampling"). The estimators are in :mod:`._kernel_estimators`.
- :func:`permutation_design` / :func:`permutation_estimate`: antithetic permutation sampling
  (Castro et al., 2009; Mitchell et al., 2022), each distinct coalition evaluated once.

Random draws use ``numpy.random.Generator`` and happen before any model call.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "KernelDesign",
    "PermutationDesign",
    "all_coalitions",
    "exact_from_table",
    "kernel_design",
    "permutation_design",
    "permutation_estimate",
]

_ENUMERATE_LIMIT = 20000  # strata up to this many coalitions are listed, then subsampled


def n_subsets(n: int, k: int) -> float:
    """``C(n, k)`` exactly while it is below 1e15, else a float that is merely huge."""
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return float(math.comb(n, k)) if log < 35 else math.exp(min(log, 690.0))


def all_coalitions(c: int) -> np.ndarray:
    """(2**c, c) bool: row ``m`` holds the bits of ``m`` (player ``g`` is bit ``g``)."""
    m = np.arange(2**c, dtype=np.int64)
    return ((m[:, None] >> np.arange(c)) & 1).astype(bool)


def shapley_weights(c: int) -> np.ndarray:
    """``w(s) = s! (c-s-1)! / c!`` for ``s = 0..c-1``: a marginal contribution's weight."""
    s = np.arange(c, dtype=np.float64)
    lg = np.vectorize(math.lgamma)
    return np.asarray(np.exp(lg(s + 1) + lg(c - s) - lg(c + 1)))


def exact_from_table(v: torch.Tensor, c: int) -> torch.Tensor:
    """Exact Shapley values (R, c) from values ``v`` (R, 2**c) in :func:`all_coalitions` order."""
    w = torch.as_tensor(shapley_weights(c), dtype=torch.float64, device=v.device)
    m = torch.arange(2**c, device=v.device)
    size = torch.zeros_like(m)
    for g in range(c):
        size += (m >> g) & 1
    # phi_g = sum_{m with g} a(m) v(m) - sum_m w(|m|) [|m| < c] v(m)
    with_g = torch.where(size >= 1, w[(size - 1).clamp(min=0)], torch.zeros((), dtype=w.dtype, device=w.device))
    without = torch.where(size < c, w[size.clamp(max=c - 1)], torch.zeros((), dtype=w.dtype, device=w.device))
    u = v * (with_g + without)
    const = (v * without).sum(1)
    cube = u.view(v.shape[0], *([2] * c))  # axis 1 + (c - 1 - g) holds bit g
    phi = torch.stack([cube.select(c - g, 1).reshape(v.shape[0], -1).sum(1) for g in range(c)], 1)
    return phi - const.unsqueeze(1)


# ----------------------------------------------------------------------------- KernelSHAP
@dataclass
class KernelDesign:
    """Coalitions (K, c) bool with their regression weights, strata and pair ids."""

    z: np.ndarray
    weight: np.ndarray
    stratum: np.ndarray  # stratum of each coalition (size pair index)
    pair: np.ndarray  # pair id of each coalition (a coalition and its complement share it)
    n_drawn: np.ndarray  # pairs drawn per stratum
    capacity: np.ndarray  # pairs available per stratum


def _allocate(n: int, mass: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Integer allocation of ``n`` pairs over strata, proportional to ``mass``, capped.

    Strata whose share reaches their capacity are filled completely (and then enumerated
    exactly); the rest is shared by largest remainders.
    """
    alloc = np.zeros(len(mass), dtype=np.int64)
    free = np.ones(len(mass), dtype=bool)
    rem = n
    while free.any() and rem > 0:
        share = rem * mass * free / (mass * free).sum()
        sat = free & (share >= cap)
        if not sat.any():
            base = np.floor(share).astype(np.int64)
            left = rem - int(base.sum())
            order = np.argsort(-(share - base), kind="stable")
            base[order[:left]] += 1
            alloc += np.where(free, base, 0)
            break
        alloc[sat] = cap[sat].astype(np.int64)
        rem -= int(cap[sat].sum())
        free &= ~sat
    out: np.ndarray = np.minimum(alloc, np.minimum(cap, 2.0**62).astype(np.int64))
    return out


def _distinct_subsets(pool: int, k: int, n: int, rng: np.random.Generator, balanced: bool = False) -> np.ndarray:
    """``n`` distinct random ``k``-subsets of ``range(pool)``, (n, pool) bool.

    Each subset is uniform over all ``k``-subsets. Small populations are listed and ``n``
    chosen at random; otherwise subsets are drawn and duplicates dropped. With ``balanced``
    (unless ``n`` is over half of all subsets) they are cut as disjoint blocks from random
    permutations, so every element appears about equally often: a balanced design with a
    lower variance for the stratified estimator.
    """
    total = n_subsets(pool, k)
    if total <= _ENUMERATE_LIMIT and (2 * n > total or not balanced):
        m = int(total)
        combos = np.array(list(itertools.combinations(range(pool), k)), dtype=np.int64).reshape(m, k)
        pick = combos[rng.choice(m, size=n, replace=False)]
        out = np.zeros((n, pool), dtype=bool)
        np.put_along_axis(out, pick, True, axis=1)
        return out
    per = max(1, pool // max(k, 1)) if balanced else 1  # disjoint blocks per permutation
    rows = np.zeros((0, pool), dtype=bool)
    while rows.shape[0] < n:
        m = -(-(n - rows.shape[0]) // per) + 1
        perms = np.argsort(rng.random((m, pool)), axis=1)[:, : per * k].reshape(m * per, k)
        new = np.zeros((m * per, pool), dtype=bool)
        np.put_along_axis(new, perms, True, axis=1)
        both = np.concatenate([rows, new])
        _, first = np.unique(np.packbits(both, axis=1), axis=0, return_index=True)
        rows = both[np.sort(first)]
    return rows[:n]


def kernel_allocation(c: int, n_samples: int, sampling: str = "kernel") -> tuple[np.ndarray, np.ndarray]:
    """Pairs drawn per size stratum ``{s, c-s}``, ``s = 1..c//2``, and pairs available.

    The budget's share of a stratum follows the Shapley kernel's mass (``sampling="kernel"``)
    or is equal (``"leverage"``); a stratum whose share covers it is enumerated.
    """
    sizes = np.arange(1, c // 2 + 1)
    cap = np.array([n_subsets(c, int(s)) for s in sizes], dtype=np.float64)
    kern = (c - 1) / (sizes * (c - sizes)).astype(np.float64)
    mass = 2 * kern if sampling == "kernel" else np.full(len(sizes), 2.0)
    if c % 2 == 0:
        cap[-1] /= 2
        mass[-1] /= 2
    return _allocate((n_samples - 2) // 2, mass, cap), cap


def kernel_design(
    c: int, n_samples: int, rng: np.random.Generator, sampling: str = "kernel", balanced: bool = False
) -> KernelDesign:
    """Paired coalitions for KernelSHAP with ``n_samples`` coalitions (empty and full included).

    Strata are allocated by :func:`kernel_allocation`; strata not enumerated are sampled
    without replacement, by simple random sampling or, with ``balanced``, as disjoint blocks
    of random permutations (see :func:`_distinct_subsets`). A drawn coalition's weight is the
    stratum's kernel mass divided by the number drawn, so the normal equations estimate those
    over all coalitions without bias.
    """
    alloc, cap = kernel_allocation(c, n_samples, sampling)
    zs, ws, st, pr = [], [], [], []
    n_pairs = 0
    for i, n in enumerate(alloc.tolist()):
        s = i + 1
        if n == 0:
            continue
        kern = (c - 1) / (s * (c - s))
        if 2 * s == c:  # canonical halves: those holding player 0
            rest = _distinct_subsets(c - 1, s - 1, n, rng, balanced)
            z = np.concatenate([np.ones((n, 1), dtype=bool), rest], axis=1)
            w = kern / 2 / n  # per coalition: mass over pairs * capacity / drawn / C(c, s)
        else:
            z = _distinct_subsets(c, s, n, rng, balanced)
            w = kern / n
        pid = np.arange(n_pairs, n_pairs + n)
        n_pairs += n
        zs += [z, ~z]
        ws += [np.full(2 * n, w)]
        st += [np.full(2 * n, i)]
        pr += [pid, pid]
    return KernelDesign(
        z=np.concatenate(zs) if zs else np.zeros((0, c), dtype=bool),
        weight=np.concatenate(ws) if ws else np.zeros(0),
        stratum=np.concatenate(st) if st else np.zeros(0, dtype=np.int64),
        pair=np.concatenate(pr) if pr else np.zeros(0, dtype=np.int64),
        n_drawn=alloc,
        capacity=cap,
    )


# ----------------------------------------------------------------------------- permutations
@dataclass
class PermutationDesign:
    """Antithetic permutations (P, c), distinct interior coalitions (U, c) and chain indices.

    ``chain[p, j]`` indexes the value of the prefix of length ``j`` of permutation ``p`` in the
    list ``[v(empty), v(z_0), ..., v(z_{U-1}), v(full)]``.
    """

    perms: np.ndarray
    z: np.ndarray
    chain: np.ndarray


def permutation_design(c: int, n_samples: int, rng: np.random.Generator) -> PermutationDesign:
    """As many antithetic pairs (a permutation and its reverse) as fit in ``n_samples``.

    Coalitions shared by several chains are evaluated once, so a budget holds more
    permutations than ``(n_samples - 2) / (c - 1)``.
    """
    budget = n_samples - 2
    seen: dict[bytes, int] = {}
    perms: list[np.ndarray] = []
    chains: list[list[int]] = []
    batch = max(4, budget // max(1, 2 * (c - 1)))
    eye = np.eye(c, dtype=np.int64)
    while True:
        keys = rng.random((batch, c))
        for p in np.argsort(keys, axis=1):
            pair = (p, p[::-1].copy())
            pref = [np.cumsum(eye[q], axis=0)[:-1].astype(bool) for q in pair]
            codes = [np.packbits(row).tobytes() for pf in pref for row in pf]
            new = {k for k in codes if k not in seen}
            if len(seen) + len(new) > budget:
                return _finish_design(c, perms, chains, seen)
            for k in codes:
                if k not in seen:
                    seen[k] = len(seen)
            for q, off in zip(pair, (0, c - 1)):
                perms.append(q)
                chains.append([0] + [1 + seen[k] for k in codes[off:off + c - 1]] + [-1])


def _finish_design(c: int, perms: list[np.ndarray], chains: list[list[int]], seen: dict[bytes, int]) -> PermutationDesign:
    z = np.zeros((len(seen), c), dtype=bool)
    for k, i in seen.items():
        z[i] = np.unpackbits(np.frombuffer(k, dtype=np.uint8))[:c].astype(bool)
    chain = np.array(chains, dtype=np.int64).reshape(len(perms), c + 1)
    chain[chain < 0] = len(seen) + 1
    return PermutationDesign(np.array(perms, dtype=np.int64).reshape(len(perms), c), z, chain)


def permutation_estimate(
    design: PermutationDesign, v: torch.Tensor, v0: torch.Tensor, vfull: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley values (R, c) and standard errors from the values ``v`` (R, U) of the design.

    The estimate is the mean marginal contribution over permutations; its standard error comes
    from the spread of the antithetic pair means (NaN with a single pair).
    """
    dev = v.device
    table = torch.cat([v0.unsqueeze(1), v, vfull.unsqueeze(1)], dim=1)  # (R, U + 2)
    chain = torch.as_tensor(design.chain, device=dev)
    vals = table[:, chain]  # (R, P, c + 1)
    marg = vals[:, :, 1:] - vals[:, :, :-1]  # contribution of perms[p, j]
    perms = torch.as_tensor(design.perms, device=dev)
    contrib = torch.zeros_like(marg).scatter_(2, perms.unsqueeze(0).expand_as(marg), marg)
    pairs = contrib.view(v.shape[0], -1, 2, contrib.shape[2]).mean(2)  # (R, Q, c)
    q = pairs.shape[1]
    phi = pairs.mean(1)
    if q > 1:
        se = pairs.std(1, unbiased=True) / math.sqrt(q)
    else:
        se = torch.full_like(phi, float("nan"))
    return phi, se
