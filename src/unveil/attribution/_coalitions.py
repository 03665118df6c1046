"""Coalitions and Shapley estimators on value tables (no model calls here).

- :func:`all_coalitions` / :func:`exact_from_table`: every coalition and the exact Shapley
  values (Shapley, 1953) from the full table of values.
- :func:`kernel_design` / :func:`solve_kernel`: KernelSHAP (Lundberg & Lee, 2017) as the
  weighted least-squares problem of Charnes et al. (1988), with the Shapley-kernel weights,
  paired (antithetic) coalitions (Covert & Lee, 2021), size strata filled exactly when the
  budget allows and sampled without replacement otherwise, the efficiency constraint enforced
  by a Lagrange multiplier, and a sandwich standard error. ``sampling="leverage"`` allocates
  the budget uniformly over coalition sizes, the leverage scores of the regression (Musco &
  Witter, 2025, "Provably accurate Shapley value estimation via leverage score sampling").
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
    "solve_kernel",
    "solve_stratified",
    "choose_degree",
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


def solve_kernel(
    design: KernelDesign, y: torch.Tensor, delta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley values (R, c) and standard errors from coalition values ``y - v(empty)``.

    ``y`` is (R, K) float64 in the design's order, ``delta`` (R,) is ``v(full) - v(empty)``.
    Solves ``min sum_k w_k (y_k - z_k . phi)**2`` subject to ``sum(phi) = delta`` for all rows
    at once (one factorisation). The standard error is the stratified sandwich estimate over
    sampled pairs, with the finite-population correction (zero for enumerated strata).
    """
    dev = y.device
    z = torch.as_tensor(design.z, dtype=torch.float64, device=dev)
    w = torch.as_tensor(design.weight, dtype=torch.float64, device=dev)
    c = z.shape[1]
    zw = z * w.unsqueeze(1)
    a = zw.T @ z
    rhs = torch.cat([zw.T @ y.T, torch.ones(c, 1, dtype=torch.float64, device=dev)], dim=1)
    chol, info = torch.linalg.cholesky_ex(a)
    sol = torch.cholesky_solve(rhs, chol) if int(info) == 0 else torch.linalg.pinv(a) @ rhs
    ainv_b, ainv_1 = sol[:, :-1], sol[:, -1]
    lam = (ainv_b.sum(0) - delta) / ainv_1.sum()
    phi = (ainv_b - ainv_1.unsqueeze(1) * lam.unsqueeze(0)).T  # (R, c)
    # sandwich: influence of each pair = P (sum over the pair of w z r)
    ainv = torch.cholesky_inverse(chol) if int(info) == 0 else torch.linalg.pinv(a)
    proj = ainv - torch.outer(ainv_1, ainv_1) / ainv_1.sum()
    r = y - phi @ z.T  # (R, K) residuals
    g, stratum = _pair_sums(design, torch.arange(z.shape[0], device=dev), r.unsqueeze(2) * zw.unsqueeze(0))
    return phi, _stratified_se(design, g @ proj.T, stratum)  # influence of a pair: proj @ g


def _stratum_sums(
    v: torch.Tensor, z: torch.Tensor, onehot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per size: sums of ``v * z`` (R, S, c) and of ``v`` (R, S) over the coalitions."""
    return onehot.T @ (v.unsqueeze(2) * z), v @ onehot


def _size_model(
    z: torch.Tensor, size: torch.Tensor, sizes: list[int], v: torch.Tensor, c: int, degree: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit ``v ~ alpha_s + z . (b0 + b2 t_s**2)`` over the sampled sizes, ``t_s = 2 s / c - 1``.

    Returns the per-size intercepts (R, S), slopes (R, S, c), in-sample residuals (R, n) and
    the leverages (n,) of the fit.
    """
    pos = torch.full((c + 1,), -1, dtype=torch.long, device=z.device)
    pos[torch.as_tensor(sizes, device=z.device)] = torch.arange(len(sizes), device=z.device)
    t2 = (2 * size.to(torch.float64) / c - 1) ** 2
    cols = [torch.nn.functional.one_hot(pos[size], len(sizes)).to(torch.float64), z]
    if degree >= 2:
        cols.append(z * t2.unsqueeze(1))
    x = torch.cat(cols, dim=1)
    g = x.T @ x
    g.diagonal().add_(1e-9 * float(g.diagonal().mean()))
    chol, info = torch.linalg.cholesky_ex(g)
    rhs = x.T @ v.T
    ginv = torch.cholesky_inverse(chol) if int(info) == 0 else torch.linalg.pinv(g)
    coef = ginv @ rhs
    res = v - (x @ coef).T
    lev = ((x @ ginv) * x).sum(1).clamp(max=1 - 1e-6)
    ns = len(sizes)
    alpha = coef[:ns].T  # (R, S)
    ts2 = (2 * torch.as_tensor(sizes, dtype=torch.float64, device=z.device) / c - 1) ** 2
    slope = coef[ns:ns + c].T.unsqueeze(1).expand(-1, ns, -1)
    if degree >= 2:
        slope = slope + ts2.view(1, -1, 1) * coef[ns + c:].T.unsqueeze(1)
    return alpha, slope, res, lev


def choose_degree(c: int, n_samples: int, sampling: str = "kernel") -> int | None:
    """The size-model degree a budget supports: 2, 0, or ``None`` (too few samples: WLS).

    Slopes quadratic in the size need about 4 sampled coalitions per parameter, a common slope
    about 2; below that the pooled Shapley-kernel regression is the safer estimator.
    """
    alloc, cap = kernel_allocation(c, n_samples, sampling)
    part = (alloc > 0) & (alloc < cap)  # sampled strata, each with one or two sizes
    n_sizes = int(sum(1 if 2 * (i + 1) == c else 2 for i in np.flatnonzero(part)))
    n_fit = int(2 * alloc[part].sum())
    if not n_sizes or n_fit >= 4 * (n_sizes + 2 * c):
        return 2
    if n_fit >= 2 * (n_sizes + c):
        return 0
    return None


def solve_stratified(
    design: KernelDesign, v: torch.Tensor, v0: torch.Tensor, vfull: torch.Tensor, degree: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley values (R, c) and standard errors by a size-stratified regression estimator.

    The exact Shapley value is ``phi_i = (1/c) sum_s (E[v | |S|=s, i in S] - E[v | |S|=s-1,
    i not in S])``. Enumerated sizes give these means exactly. For sampled sizes a linear
    model ``v ~ alpha_s + z . beta_s`` (size intercepts, slopes quadratic in the size) fitted
    on the sampled coalitions gives the means in closed form from the known moments of ``z``
    within a size, plus the mean residual correction, i.e. the generalised regression (GREG)
    estimator of survey sampling (Sarndal, Swensson & Wretman, 1992), approximately unbiased
    for any game. The efficiency constraint holds exactly. ``v`` is (R, K) in the design's
    order. The standard error is the stratified residual (GREG) variance over sampled pairs.
    """
    dev = v.device
    z = torch.as_tensor(design.z, dtype=torch.float64, device=dev)
    c = z.shape[1]
    size = z.sum(1).round().long()
    counts = torch.bincount(size, minlength=c + 1).cpu().numpy()
    n_all = np.array([n_subsets(c, s) for s in range(c + 1)])
    if any(counts[s] == 0 for s in range(1, c)):
        raise ValueError("every coalition size must be enumerated or sampled")  # pragma: no cover
    mean_in = torch.zeros(v.shape[0], c + 1, c, dtype=torch.float64, device=dev)
    mean_out = torch.zeros_like(mean_in)
    mean_out[:, 0] = v0.unsqueeze(1)
    mean_in[:, c] = vfull.unsqueeze(1)
    onehot = torch.nn.functional.one_hot(size, c + 1).to(torch.float64)
    full_sizes = [s for s in range(1, c) if counts[s] >= n_all[s]]
    if full_sizes:
        fs = torch.as_tensor(full_sizes, device=dev)
        tzy, ty = _stratum_sums(v, z, onehot[:, fs])
        nf = torch.as_tensor(n_all[full_sizes], dtype=torch.float64, device=dev).view(1, -1, 1)
        p1 = (fs.to(torch.float64) / c).view(1, -1, 1)
        mean_in[:, fs] = tzy / (nf * p1)
        mean_out[:, fs] = (ty.unsqueeze(2) - tzy) / (nf * (1 - p1))
    se = torch.zeros(v.shape[0], c, dtype=torch.float64, device=dev)
    sampled = [s for s in range(1, c) if counts[s] < n_all[s]]
    if sampled:
        ss = torch.as_tensor(sampled, device=dev)
        sel = torch.nonzero(torch.isin(size, ss)).flatten()
        m_in, m_out, unit = _model_means(z[sel], size[sel], sampled, v[:, sel], degree)
        mean_in[:, ss], mean_out[:, ss] = m_in, m_out
        se = _stratified_se(design, *_pair_sums(design, sel, unit))
    phi = (mean_in[:, 1:] - mean_out[:, :-1]).sum(1) / c
    return phi, se


def _model_means(
    z: torch.Tensor, size: torch.Tensor, sizes: list[int], v: torch.Tensor, degree: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GREG estimates of ``E[v | |S|=s, i in S]`` and ``E[v | |S|=s, i not in S]`` (R, S, c)
    for the sampled sizes, and each coalition's contribution to phi (R, n, c) for the SE."""
    dev, c = z.device, z.shape[1]
    alpha, slope, res, lev = _size_model(z, size, sizes, v, c, degree)
    ss = torch.as_tensor(sizes, device=dev)
    sf = ss.to(torch.float64).view(1, -1, 1)
    p1, q = sf / c, (sf - 1) / (c - 1)  # P(i in S), P(j in S | i in S) within a size
    tot = slope.sum(2, keepdim=True)
    ns = torch.bincount(size, minlength=c + 1)[ss].to(torch.float64).view(1, -1, 1)
    oh = torch.nn.functional.one_hot(size, c + 1)[:, ss].to(torch.float64)
    pin, pout = ns * p1, ns * (1 - p1)
    m_in = alpha.unsqueeze(2) + (1 - q) * slope + q * tot + _stratum_sums(res, z, oh)[0] / pin
    m_out = alpha.unsqueeze(2) + (sf / (c - 1)) * (tot - slope) + _stratum_sums(res, 1 - z, oh)[0] / pout
    # each coalition's share of phi: (z r / (n p1) - (1 - z) r / (n (1 - p1))) / c
    pos = torch.full((c + 1,), -1, dtype=torch.long, device=dev)
    pos[ss] = torch.arange(len(sizes), device=dev)
    k_in, k_out = (1.0 / pin.view(1, -1))[:, pos[size]], (1.0 / pout.view(1, -1))[:, pos[size]]
    adj = res / (1 - lev)  # HC3: in-sample residuals shrink with the leverage
    unit = adj.unsqueeze(2) * (z * k_in.unsqueeze(2) - (1 - z) * k_out.unsqueeze(2)) / c
    return m_in, m_out, unit


def _pair_sums(design: KernelDesign, sel: torch.Tensor, unit: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Sums of per-coalition contributions ``unit`` (R, n, c) over each complementary pair
    (both members are in ``sel``): (R, P, c), and the stratum of each pair (P,)."""
    pair = design.pair[sel.cpu().numpy()]
    order = np.argsort(pair, kind="stable")
    per_pair = unit[:, torch.as_tensor(order, device=unit.device)].view(unit.shape[0], -1, 2, unit.shape[2]).sum(2)
    stratum = design.stratum[sel.cpu().numpy()][order][::2]
    return per_pair, stratum


def _stratified_se(design: KernelDesign, per_pair: torch.Tensor, stratum: np.ndarray) -> torch.Tensor:
    """Standard error from per-pair contributions (R, P, c): stratified, with the finite
    population correction (enumerated strata add nothing)."""
    var = torch.zeros(per_pair.shape[0], per_pair.shape[2], dtype=per_pair.dtype, device=per_pair.device)
    for i, (n, cap) in enumerate(zip(design.n_drawn, design.capacity)):
        if n == 0 or n >= cap:
            continue
        f = per_pair[:, torch.as_tensor(np.flatnonzero(stratum == i), device=per_pair.device)]
        ss = ((f - f.mean(1, keepdim=True)) ** 2).sum(1) * n / (n - 1) if n > 1 else (f**2).sum(1)
        var += ss * (1 - n / cap)
    return var.sqrt()


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
