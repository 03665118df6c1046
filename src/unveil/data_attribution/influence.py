"""Influence functions (Koh & Liang 2017): ``score[t, i] = g_t^T (H + damping I)^-1 g_i``.

``g_i`` is the gradient of training row ``i``'s loss, ``g_t`` that of test row ``t``, ``H`` the
Hessian of the training objective ``(1/n) sum_i loss_i + (l2/2) ||theta||^2`` at the trained
parameters. Up-weighting row ``i`` by ``eps`` in that objective moves the test loss by
``-eps * score[t, i]`` to first order, so positive scores are proponents. Four solvers for the
inverse-Hessian-vector products ``(H + damping I)^-1 g_t``:

* ``"exact"`` — the Hessian itself (``torch.func.hessian``, summed over chunks of rows) and a
  linear solve; for up to ``max_exact`` parameters (the last layer, a logistic regression);
* ``"cg"`` — conjugate gradient on Hessian-vector products (needs ``H + damping I`` positive
  definite: add ``damping`` for a non-convex model);
* ``"lissa"`` — the stochastic Neumann series of Agarwal et al. 2017 (``depth`` steps on
  mini-batches of ``lissa_batch`` rows, ``repeats`` averaged; ``scale`` above the largest
  eigenvalue, estimated by power iteration when not given);
* ``"arnoldi"`` — Schioppa et al. 2022: ``n_iter`` Arnoldi steps build a Krylov basis, the
  ``top_k`` largest eigenvalues (by magnitude) and their vectors stand in for ``H``.

Only the test gradients (``[n_test, P]``) and the solved vectors are held; training gradients
are streamed through chunks.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch.func import vmap

from ..errors import OptionError
from .estimators import Problem, register_estimator

__all__ = ["hessian", "hessian_matmul", "inverse_hvp", "self_influence_scores"]

_SOLVERS = ("exact", "cg", "lissa", "arnoldi")


def hessian(prob: Problem) -> torch.Tensor:
    """The Hessian of the training objective (mean loss + l2 penalty), ``[P, P]``."""
    obj, p = prob.objective, prob.objective.size
    item = prob.theta.element_size()
    h = torch.zeros(p, p, dtype=prob.theta.dtype)
    for a, b in obj.each_chunk(prob.n_train, extra_per_row=8 * p * item):
        h += torch.func.hessian(obj.weighted_loss)(prob.theta, prob.x_train[a:b], prob.y_train[a:b])
    h /= prob.n_train
    h += obj.l2 * torch.eye(p, dtype=h.dtype)
    return 0.5 * (h + h.T)


def hessian_matmul(prob: Problem, v: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``H @ v`` for ``v`` of shape ``[P, k]`` (Hessian-vector products, no Hessian formed);
    over ``rows=(x, y)`` instead of the whole training set when given."""
    obj = prob.objective
    x, y = rows if rows is not None else (prob.x_train, prob.y_train)
    n = int(x.shape[0])
    k = int(v.shape[1])
    item = prob.theta.element_size()
    out = torch.zeros_like(v)

    def one(vec: torch.Tensor, xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        return obj.hvp(prob.theta, xc, yc, vec)

    for a, b in obj.each_chunk(n, extra_per_row=4 * k * obj.size * item):
        xc, yc = x[a:b], y[a:b]
        try:
            out += vmap(one, in_dims=(1, None, None), out_dims=1)(v, xc, yc)
        except (RuntimeError, NotImplementedError, ValueError):
            out += torch.stack([one(v[:, j], xc, yc) for j in range(k)], dim=1)
    return out / n + obj.l2 * v


def _positive(name: str, v: Any, *, integer: bool = False, zero: bool = False) -> None:
    ok = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.floating, np.integer))
    if isinstance(v, bool) or not ok or not math.isfinite(float(v)) or (v < 0 if zero else v <= 0):
        raise OptionError(f"{name} must be a {'whole' if integer else 'finite'} number "
                          f"{'>= 0' if zero else '> 0'}, got {v!r}")


def _exact(prob: Problem, rhs: torch.Tensor, damping: float, max_exact: int) -> tuple[torch.Tensor, dict[str, Any]]:
    p = prob.objective.size
    if p > max_exact:
        raise OptionError(
            f"solver='exact' forms the {p} x {p} Hessian, more than max_exact={max_exact} parameters; "
            "use params='last' (the last layer), solver='cg', 'lissa' or 'arnoldi', or raise max_exact"
        )
    if "hessian" not in prob.extras:  # kept for repeated solves (self-influence chunks)
        prob.extras["hessian"] = hessian(prob)
    h = prob.extras["hessian"] + damping * torch.eye(p, dtype=prob.theta.dtype)
    try:
        sol = torch.linalg.solve(h, rhs)
    except RuntimeError as exc:
        raise OptionError(f"the Hessian is singular ({exc}); add damping (e.g. damping=0.01)") from None
    eig = torch.linalg.eigvalsh(h)
    return sol, {"min_eigenvalue": float(eig[0]), "max_eigenvalue": float(eig[-1])}


def _cg(prob: Problem, rhs: torch.Tensor, damping: float, tol: float, max_iter: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Conjugate gradient on every column of ``rhs`` at once (independent step sizes)."""
    def mat(v: torch.Tensor) -> torch.Tensor:
        return hessian_matmul(prob, v) + damping * v

    x = torch.zeros_like(rhs)
    r = rhs.clone()
    d = r.clone()
    rr = (r * r).sum(0)
    norm_b = rr.sqrt().clamp_min(1e-300)
    it = 0
    while it < max_iter:
        it += 1
        hd = mat(d)
        dhd = (d * hd).sum(0)
        if bool((dhd <= 0).any()):
            raise OptionError(
                "conjugate gradient met a direction of non-positive curvature: the Hessian is not "
                f"positive definite (a non-convex model) with damping={damping:.3g}; add more damping "
                "(e.g. damping=0.01) or use "
                "solver='exact' or 'arnoldi'"
            )
        alpha = rr / dhd
        x += alpha * d
        r -= alpha * hd
        rr_new = (r * r).sum(0)
        if bool((rr_new.sqrt() / norm_b <= tol).all()):
            rr = rr_new
            break
        d = r + (rr_new / rr) * d
        rr = rr_new
    return x, {"iterations": it, "relative_residual": float((rr.sqrt() / norm_b).max())}


def _power(prob: Problem, shift: float, steps: int, seed: int) -> float:
    """The Rayleigh quotient of ``shift I - H`` (``H`` when ``shift`` is 0, sign folded) after
    ``steps`` power iterations: the extreme eigenvalue, slightly under-estimated."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(prob.objective.size, 1, generator=gen, dtype=prob.theta.dtype)
    v /= v.norm()
    lam = 0.0
    for _ in range(steps):
        w = hessian_matmul(prob, v)
        if shift:
            w = shift * v - w
        lam = float((v * w).sum())
        nw = w.norm()
        if float(nw) == 0.0:
            break
        v = w / nw
    return lam


def _top_eigenvalue(prob: Problem, damping: float, steps: int = 30, seed: int = 0) -> float:
    if "max_eigenvalue" not in prob.extras:
        prob.extras["max_eigenvalue"] = abs(_power(prob, 0.0, steps, seed))
    return float(prob.extras["max_eigenvalue"]) + damping


def auto_damping(prob: Problem, solver: str, *, seed: int = 0, max_exact: int = 6000) -> float:
    """``damping="auto"``: none when the Hessian is clearly positive definite (smallest
    eigenvalue above 1e-4 of the largest), else enough to lift the smallest eigenvalue to 1e-3
    of the largest (Koh & Liang damp non-convex models the same way). The eigenvalues are exact
    for ``solver="exact"`` and Ritz values of 40 Arnoldi steps otherwise (the smallest less a
    margin of 1% of the largest, as Ritz values lie inside the spectrum)."""
    if solver == "exact" and prob.objective.size <= max_exact:
        if "hessian" not in prob.extras:
            prob.extras["hessian"] = hessian(prob)
        eig = torch.linalg.eigvalsh(prob.extras["hessian"])
        lo, hi = float(eig[0]), float(eig[-1].abs())
    else:
        _, small, _ = _krylov(prob, 0.0, 40, seed)  # Ritz values bracket the spectrum from inside
        ritz = torch.linalg.eigvalsh(small)
        hi = float(ritz.abs().max())
        prob.extras.setdefault("max_eigenvalue", hi)
        lo = float(ritz[0]) - 0.01 * hi  # the smallest Ritz value lies above the smallest eigenvalue
    if lo > 1e-4 * hi:
        return 0.0
    return max(0.0, -lo) + 1e-3 * hi


def _lissa(prob: Problem, rhs: torch.Tensor, damping: float, depth: int, repeats: int, batch: int | None,
           scale: float | None, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(H + damping I)^-1 v = (1/s) sum_j (I - (H + damping I)/s)^j v``, truncated at ``depth``
    with each ``H`` replaced by a mini-batch estimate (the whole set when ``batch`` is None)."""
    s = scale if scale is not None else 1.1 * (_top_eigenvalue(prob, damping, seed=seed) + 1e-12)
    gen = torch.Generator().manual_seed(seed)
    n = prob.n_train
    total = torch.zeros_like(rhs)
    for _ in range(repeats):
        h = rhs.clone()
        for _ in range(depth):
            if batch is None or batch >= n:
                hv = hessian_matmul(prob, h)
            else:
                pick = torch.randperm(n, generator=gen)[:batch]
                hv = hessian_matmul(prob, h, rows=(prob.x_train[pick], prob.y_train[pick]))
            h = rhs + h - (hv + damping * h) / s
        total += h / s
    return total / repeats, {"scale": s}


def _arnoldi(prob: Problem, rhs: torch.Tensor, damping: float, n_iter: int, top_k: int,
             seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Arnoldi iteration (full re-orthogonalisation) on ``H + damping I``; the ``top_k``
    eigenpairs of largest magnitude of the projected matrix invert it on their span."""
    q, small, m = _krylov(prob, damping, n_iter, seed)
    lam, vec = torch.linalg.eigh(small)
    order = torch.argsort(lam.abs(), descending=True)[:min(top_k, m)]
    lam, u = lam[order], q[:, :m] @ vec[:, order]
    sol = u @ ((u.T @ rhs) / lam[:, None])
    return sol, {"krylov_dimension": m, "eigenvalues_kept": int(lam.numel()),
                 "smallest_kept_eigenvalue": float(lam.abs().min())}


def _krylov(prob: Problem, damping: float, n_iter: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """An orthonormal Krylov basis ``q`` of ``H + damping I`` (``n_iter`` Arnoldi steps with full
    re-orthogonalisation, fewer if the space closes) and the projected symmetric matrix."""
    p = prob.objective.size
    n_iter = min(n_iter, p)
    dtype = prob.theta.dtype
    gen = torch.Generator().manual_seed(seed)
    q = torch.zeros(p, n_iter + 1, dtype=dtype)
    hm = torch.zeros(n_iter + 1, n_iter, dtype=dtype)
    v0 = torch.randn(p, generator=gen, dtype=dtype)
    q[:, 0] = v0 / v0.norm()
    m = n_iter
    for j in range(n_iter):
        w = (hessian_matmul(prob, q[:, j:j + 1]) + damping * q[:, j:j + 1])[:, 0]
        for _ in range(2):  # twice is enough (Giraud et al.)
            c = q[:, :j + 1].T @ w
            w = w - q[:, :j + 1] @ c
            hm[:j + 1, j] += c
        hm[j + 1, j] = w.norm()
        if float(hm[j + 1, j]) <= 1e-12 * float(hm[:j + 1, :j + 1].abs().max().clamp_min(1e-300)):
            m = j + 1  # the Krylov space is invariant: exact on it
            break
        q[:, j + 1] = w / hm[j + 1, j]
    small = hm[:m, :m]
    return q, 0.5 * (small + small.T), m


def inverse_hvp(prob: Problem, rhs: torch.Tensor, *, solver: str = "exact", damping: float | str = 0.0,
                max_exact: int = 6000, tol: float = 1e-10, max_iter: int = 1000, depth: int = 1000,
                repeats: int = 1, lissa_batch: int | None = None, scale: float | None = None,
                n_iter: int = 200, top_k: int = 100, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(H + damping I)^-1 rhs`` for ``rhs`` of shape ``[P, k]`` with the chosen solver;
    the info dict holds the damping used."""
    if solver not in _SOLVERS:
        raise OptionError(f"solver must be one of {list(_SOLVERS)}, got {solver!r}")
    if solver == "exact":
        _positive("max_exact", max_exact, integer=True)
        if prob.objective.size > max_exact:
            return _exact(prob, rhs, 0.0, int(max_exact))  # raises, naming the other choices
    if damping == "auto":
        if "auto_damping" not in prob.extras:
            prob.extras["auto_damping"] = auto_damping(prob, solver, seed=seed if isinstance(seed, int) else 0,
                                                       max_exact=int(max_exact))
        damping = prob.extras["auto_damping"]
    _positive("damping", damping, zero=True)
    sol, info = _solve(prob, rhs, solver, float(damping), max_exact, tol, max_iter, depth, repeats, lissa_batch,
                       scale, n_iter, top_k, seed)
    return sol, {"damping_used": float(damping), **info}


def _solve(prob: Problem, rhs: torch.Tensor, solver: str, damping: float, max_exact: int, tol: float,
           max_iter: int, depth: int, repeats: int, lissa_batch: int | None, scale: float | None, n_iter: int,
           top_k: int, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    if solver == "exact":
        _positive("max_exact", max_exact, integer=True)
        return _exact(prob, rhs, float(damping), int(max_exact))
    if solver == "cg":
        _positive("tol", tol)
        _positive("max_iter", max_iter, integer=True)
        return _cg(prob, rhs, float(damping), float(tol), int(max_iter))
    if solver == "lissa":
        for name, v in (("depth", depth), ("repeats", repeats)):
            _positive(name, v, integer=True)
        if lissa_batch is not None:
            _positive("lissa_batch", lissa_batch, integer=True)
        if scale is not None:
            _positive("scale", scale)
        return _lissa(prob, rhs, float(damping), int(depth), int(repeats), lissa_batch,
                      None if scale is None else float(scale), int(seed))
    _positive("n_iter", n_iter, integer=True)
    _positive("top_k", top_k, integer=True)
    return _arnoldi(prob, rhs, float(damping), int(n_iter), int(top_k), int(seed))


_OPTIONS: dict[str, Any] = {"solver": "exact", "damping": "auto", "max_exact": 6000, "tol": 1e-10,
                            "max_iter": 1000, "depth": 1000, "repeats": 1, "lissa_batch": None, "scale": None,
                            "n_iter": 200, "top_k": 100, "seed": 0}


def influence_scores(prob: Problem, **options: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """The ``"influence"`` estimator: ``g_test^T (H + damping I)^-1 g_train`` for every pair."""
    t0 = time.perf_counter()
    g_test = prob.test_gradients()
    t1 = time.perf_counter()
    sol, info = inverse_hvp(prob, g_test.T.contiguous(), **options)
    t2 = time.perf_counter()
    scores = prob.train_gradients_times(sol).T.contiguous()
    t3 = time.perf_counter()
    used = {k: options[k] for k in _used_options(options["solver"]) if k in options}
    return scores, {**used, **info, "seconds_test_gradients": t1 - t0, "seconds_solve": t2 - t1,
                    "seconds_train_gradients": t3 - t2}


def _used_options(solver: str) -> tuple[str, ...]:
    return {"exact": ("solver", "damping", "max_exact"), "cg": ("solver", "damping", "tol", "max_iter"),
            "lissa": ("solver", "damping", "depth", "repeats", "lissa_batch", "scale", "seed"),
            "arnoldi": ("solver", "damping", "n_iter", "top_k", "seed")}.get(solver, ("solver",))


def self_influence_scores(prob: Problem, **options: Any) -> torch.Tensor:
    """``g_i^T (H + damping I)^-1 g_i`` for every training row (``[n_train]``): how much each
    row supports its own label; mislabelled rows tend to score high. The solve is done once
    per chunk of training rows, so memory stays bounded."""
    opts = {**_OPTIONS, **options}
    out = prob.objective.map_gradients(
        prob.theta, prob.x_train, prob.y_train,
        lambda a, b, g: (g * inverse_hvp(prob, g.T.contiguous(), **opts)[0].T).sum(1),
    )
    assert out is not None
    return out


register_estimator("influence", influence_scores, options=_OPTIONS, default_params="all",
                   description="influence functions (Koh & Liang 2017): exact, CG, LiSSA or Arnoldi")
