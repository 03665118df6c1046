"""KernelSHAP estimators on the values of a :func:`~._coalitions.kernel_design`.

- :func:`solve_kernel`: the weighted least-squares problem of Charnes et al. (1988) with the
  Shapley-kernel weights and the efficiency constraint enforced by a Lagrange multiplier.
- :func:`solve_stratified`: coalition sizes as strata, a regression (GREG) estimator of the
  stratum means in the exact Shapley formula (:func:`choose_degree` picks the size model).
- :func:`solve_surrogate`: regression adjustment (a control variate): a kernel-ridge surrogate
  of the game whose Shapley values are known in closed form, plus :func:`solve_stratified` on
  the residual game.

All report a stratified sandwich standard error over the sampled complementary pairs.
"""

from __future__ import annotations

import numpy as np
import torch

from ._coalitions import KernelDesign, kernel_allocation, n_subsets

__all__ = ["choose_degree", "hamming_kernel_shapley", "solve_kernel", "solve_stratified", "solve_surrogate"]


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


# ----------------------------------------------------------------------------- surrogate
_RHO_SCALES = (2.0, 8.0)  # kernel widths to choose from: rho = exp(-scale / c)
_RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # ridge, relative to the largest eigenvalue
SURROGATE_MAX_COALITIONS = 2500  # above this the kernel fit costs more than it gains


def hamming_kernel_shapley(c: int, rho: float) -> np.ndarray:
    """``H[t]`` for ``t = 0..c-1``: the Shapley value of the game ``S -> rho**|S xor T|`` is
    ``(1 - rho) / c * H[|T| - 1]`` for a player in ``T`` and ``-(1 - rho) / c * H[|T|]`` for one
    outside it.

    In the size-stratified Shapley formula the other ``c - 1`` players form a uniformly random
    set of size ``j`` whose overlap with ``T`` is hypergeometric; adding the player changes the
    distance by one, so ``H[t] = sum_j E[rho**(t + j - 2 A)]``, ``A ~ Hypergeom(c - 1, t, j)``.
    """
    from math import lgamma

    lg = np.array([lgamma(k + 1) for k in range(c + 1)])
    t = np.arange(c)[:, None, None]
    j = np.arange(c)[None, :, None]
    a = np.arange(c)[None, None, :]
    ok = (a <= t) & (a <= j) & (j - a <= c - 1 - t)
    ti, ji, ai = np.broadcast_arrays(t, j, a)
    lp = (lg[ti] - lg[np.where(ok, ai, 0)] - lg[np.where(ok, ti - ai, 0)]
          + lg[c - 1 - ti] - lg[np.where(ok, ji - ai, 0)] - lg[np.where(ok, c - 1 - ti - ji + ai, 0)]
          - (lg[c - 1] - lg[ji] - lg[c - 1 - ji]))
    dist = np.where(ok, ti + ji - 2 * ai, 0).astype(np.float64)
    terms = np.where(ok, np.exp(np.where(ok, lp, 0.0)) * rho**dist, 0.0)
    out: np.ndarray = terms.sum(axis=(1, 2))
    return out


def _kernel_fit(
    z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel ridge fit of ``y`` (R, K) on coalitions ``z`` (K, c), kernel ``rho**hamming``,
    width and ridge chosen per row by leave-one-out error (closed form).

    Returns the in-sample fit (R, K), leave-one-out residuals (R, K) and the fit's exact
    Shapley values (R, c) from :func:`hamming_kernel_shapley`.
    """
    dev, c = z.device, z.shape[1]
    ham = z @ (1 - z).T + (1 - z) @ z.T  # (K, K) Hamming distances
    t = z.sum(1).round().long()
    r = y.shape[0]
    best = torch.full((r,), float("inf"), dtype=torch.float64, device=dev)
    fit, loo, phi = torch.zeros_like(y), torch.zeros_like(y), torch.zeros(r, c, dtype=torch.float64, device=dev)
    for scale in _RHO_SCALES:
        rho = float(np.exp(-scale / c))
        ev, u = torch.linalg.eigh(rho**ham)
        ev = ev.clamp(min=0)
        uy = u.T @ y.T  # (K, R)
        h_tab = torch.as_tensor(hamming_kernel_shapley(c, rho), device=dev)
        # Shapley value of each centre's kernel function (K, c)
        k_phi = (1 - rho) / c * torch.where(
            z > 0.5, h_tab[(t - 1).clamp(min=0)].unsqueeze(1), -h_tab[t.clamp(max=c - 1)].unsqueeze(1))
        for ridge in _RIDGES:
            lam = ridge * float(ev.max())
            shrink = ev / (ev + lam)
            f = (u @ (shrink.unsqueeze(1) * uy)).T  # (R, K)
            hat = ((u**2) * shrink).sum(1).clamp(max=1 - 1e-9)
            lr = (y - f) / (1 - hat)
            mse = (lr**2).mean(1)
            take = mse < best
            if not bool(take.any()):
                continue
            alpha = (u @ (uy / (ev + lam).unsqueeze(1))).T  # (R, K)
            best = torch.where(take, mse, best)
            fit[take], loo[take], phi[take] = f[take], lr[take], (alpha @ k_phi)[take]
    return fit, loo, phi


def solve_surrogate(
    design: KernelDesign, v: torch.Tensor, v0: torch.Tensor, vfull: torch.Tensor, degree: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley values (R, c) and standard errors: a surrogate game with known Shapley values
    plus a stratified estimate of what it misses (regression adjustment, a control variate).

    The surrogate is an additive fit plus kernel ridge regression on the coalitions with the
    kernel ``rho**hamming`` (width and ridge by leave-one-out error), fitted on all evaluated
    coalitions, empty and full included. Its Shapley values are exact in closed form
    (:func:`hamming_kernel_shapley`); the residual game ``v - surrogate`` goes through
    :func:`solve_stratified` (or :func:`solve_kernel` when ``degree`` is ``None``), so
    efficiency holds exactly, and games the additive part fits (linear models) are exact.
    The standard error is the residual estimator's, computed on leave-one-out residuals.
    """
    dev = v.device
    z = torch.as_tensor(design.z, dtype=torch.float64, device=dev)
    c = z.shape[1]
    zz = torch.cat([torch.zeros(1, c, dtype=torch.float64, device=dev), z,
                    torch.ones(1, c, dtype=torch.float64, device=dev)])
    vv = torch.cat([v0.unsqueeze(1), v, vfull.unsqueeze(1)], dim=1)
    # additive part: least squares on [1, z]
    x = torch.cat([torch.ones(zz.shape[0], 1, dtype=torch.float64, device=dev), zz], dim=1)
    coef = torch.linalg.lstsq(x, vv.T).solution  # (c + 1, R)
    lin = vv - (x @ coef).T
    scale = lin.abs().amax(1, keepdim=True)
    if not bool((scale > 1e-12 * vv.abs().amax(1, keepdim=True).clamp(min=1e-300)).any()):
        res, loo, phi_g = lin, lin, torch.zeros(v.shape[0], c, dtype=torch.float64, device=dev)
    else:
        mu = lin.mean(1, keepdim=True)
        fit, loo, phi_g = _kernel_fit(zz, lin - mu)
        res = lin - mu - fit
    phi_g = phi_g + coef[1:].T

    def residual(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if degree is None:
            return solve_kernel(design, r[:, 1:-1] - r[:, :1], r[:, -1] - r[:, 0])
        return solve_stratified(design, r[:, 1:-1], r[:, 0], r[:, -1], degree)

    # sampled coalitions enter the residual estimator with their leave-one-out residuals (a
    # fit that did not see them: the in-sample ones are shrunk towards the fit, a bias);
    # enumerated sizes and the empty and full coalitions with the in-sample ones, so that
    # their exact sums and efficiency match the surrogate's own values
    sampled = torch.as_tensor(design.n_drawn < design.capacity, device=dev)[
        torch.as_tensor(design.stratum, device=dev)]
    keep = torch.cat([sampled.new_zeros(1), sampled, sampled.new_zeros(1)])
    phi_r, se = residual(torch.where(keep, loo, res))
    return phi_g + phi_r, se
