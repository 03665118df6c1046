"""The two searches and the steps every candidate goes through afterwards.

* :func:`gradient_search` (differentiable models; Wachter, Mittelstadt & Russell, 2017): normalised
  gradient descent with a decaying step on a batch of restarts per row (the first from the input itself, the others from random sparse
  starts with random per-column weights, for diversity) minimising
  ``lam * relu(kappa - margin) + sum(w * d**2) + sparsity * |d|_1 + plausibility * knn(d)`` in
  units of each column's scale. Every step evaluates the *projected* row (straight-through), so
  every candidate recorded already satisfies the projectable constraints; ``lam`` grows while a
  restart has not reached the class and shrinks once it has.
* :func:`sphere_search` (any model; Laugel et al., 2018, "growing spheres"): candidates drawn in
  growing spherical layers around the input, each moving a random subset of the mutable columns,
  projected, and scored many per model call, until a layer holds valid rows.
* :func:`shrink` moves each valid candidate back towards the input along the segment (a batched
  grid line search, twice), :func:`sparsify` greedily resets changed columns to the input while
  the row stays valid, and :func:`verify` is the final check: the model's class on the exact
  float64 rows and every constraint, the feasibility function included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core import draws
from ..core.batching import BatchSize, block_size, chunks
from ..core.hooks import forward_hooks
from ..core.model import Model
from .constraints import Space
from .decision import Decision, decide

__all__ = ["Problem", "gradient_search", "shrink", "sparse_variants", "sparsify", "sphere_search", "verify"]


@dataclass
class Problem:
    """Everything the searches share: the model (of table rows), constraints, decision rule,
    per-column scale, originals and desired classes, data rows for plausibility."""

    model: Model
    space: Space
    decision: Decision
    scale: np.ndarray  # (F,)
    x0: np.ndarray  # (N, F)
    desired: np.ndarray  # (N,)
    data: np.ndarray  # (D, F)
    batch_size: BatchSize = "auto"
    sparsity: float = 0.0
    plausibility: float = 0.0
    seed: int = 0


def verify(p: Problem, rows: np.ndarray, x0: np.ndarray, desired: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin (M,), violations (M, kinds), scores) of candidate rows; valid = margin > 0 and no violation."""
    if rows.shape[0] == 0:
        return np.zeros(0), np.zeros((0, 6), bool), np.zeros((0,))
    scores = decide(p.model, rows, batch_size=p.batch_size)
    margin = p.decision.margin(torch.from_numpy(np.asarray(scores, np.float64)), torch.from_numpy(desired)).numpy()
    return margin, p.space.violations(rows, x0), scores


def _valid(margin: np.ndarray, viol: np.ndarray) -> np.ndarray:
    return np.asarray((margin > 0) & ~viol.any(axis=1))


def gradient_search(p: Problem, idx: np.ndarray, *, n_restarts: int, n_steps: int, lr: float,
                    kappa: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``idx``: (n, R, F) candidates (each restart's closest projected row reaching the
    class; the input where none did) and (n, R) whether one was reached."""
    m = p.model
    n, f, r = idx.size, p.x0.shape[1], n_restarts
    # the random start and weights of restart j of row i are draws (i * r + j) of counter-based
    # streams: the same whichever block of rows and chunk of restarts asks for them
    lo, hi = int(idx.min()) * r * f, (int(idx.max()) + 1) * r * f
    at = ((idx[:, None] * r + np.arange(r)[None, :]).reshape(-1, 1) * f + np.arange(f)[None, :]) - lo
    pos = torch.from_numpy(at)
    noise = (draws.normal(p.seed, lo, hi, stream=41)[pos] * (draws.uniform(p.seed, lo, hi, stream=42)[pos] < 0.5))
    weights = torch.exp(0.7 * draws.normal(p.seed, lo, hi, stream=43)[pos])
    x0 = np.repeat(p.x0[idx], r, axis=0)
    des = np.repeat(p.desired[idx], r)
    # restarts in chunks whose activations, gradients and buffers fit the memory budget (and
    # at most batch_size rows per model call when it is a number)
    per_row = 3 * _activation_bytes(m, f) + 24 * f * max(1, torch.empty(0, dtype=m.dtype).element_size())
    size = block_size(per_row, n * r, what="one restart of the gradient search", share=0.25)
    if isinstance(p.batch_size, int) and not isinstance(p.batch_size, bool):
        size = min(size, max(1, int(p.batch_size)))
    best = np.empty((n * r, f))
    found = np.zeros(n * r, bool)
    for a, b in chunks(n * r, size):
        best[a:b], found[a:b] = _descend(p, x0[a:b], des[a:b], noise[a:b], weights[a:b],
                                         (torch.arange(a, b) % r) == 0, n_steps=n_steps, lr=lr, kappa=kappa)
    return best.reshape(n, r, f), found.reshape(n, r)


def _activation_bytes(m: Model, f: int) -> int:
    """Bytes of the outputs of the model's leaf modules for one row (64 KiB when unknown)."""
    module = m.module
    if module is None:
        return 1 << 16
    total = 0

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    leaves = [mod for mod in module.modules() if not list(mod.children())]
    seen = m.n_evals
    with m.guard(), torch.no_grad(), forward_hooks([(mod, hook) for mod in leaves]):
        m.forward(torch.zeros(1, f, device=m.device, dtype=m.dtype))
    m.n_evals = seen  # the probe is not part of the search's cost
    return max(total, 8 * f)


def _descend(p: Problem, x0n: np.ndarray, desn: np.ndarray, noise: torch.Tensor, weights: torch.Tensor,
             first_t: torch.Tensor, *, n_steps: int, lr: float, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """The descent of one chunk of restarts: (rows, found) — each restart's closest projected
    row reaching the class (the input where none did)."""
    m, sp = p.model, p.space
    dev, dt = m.device, m.dtype
    x0 = torch.as_tensor(x0n, device=dev, dtype=dt)
    des = torch.as_tensor(desn, device=dev)
    sc = torch.as_tensor(p.scale, device=dev, dtype=dt)
    free = torch.as_tensor(sp.free, device=dev, dtype=dt)
    first = first_t.to(dev)[:, None]
    noise = noise.to(dev, dt)
    delta = torch.where(first, torch.zeros_like(noise), 0.5 * noise).requires_grad_(True)
    w = torch.where(first, torch.ones_like(noise), weights.to(dev, dt))
    near = None
    if p.plausibility > 0:
        near = torch.as_tensor(p.data[:512], device=dev, dtype=dt) / sc
    lam = torch.ones(x0.shape[0], device=dev, dtype=dt)
    best = x0.clone()
    best_d = torch.full((x0.shape[0],), float("inf"), device=dev, dtype=dt)
    with m.guard(), torch.enable_grad():
        for step in range(n_steps):
            zc = x0 + delta * sc * free
            zp = sp.project(zc.detach(), x0)
            z = zc + (zp - zc).detach()  # straight-through: the model sees the projected row
            margin = p.decision.margin(m.forward(z), des)
            d = (z - x0) / sc
            loss = lam * torch.relu(kappa - margin) + (w * d * d).sum(1) + p.sparsity * d.abs().sum(1)
            if near is not None:
                loss = loss + p.plausibility * torch.cdist(z / sc, near).min(dim=1).values
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            with torch.no_grad():
                # normalised gradient descent with a cosine-decaying step: scale-free per row,
                # and it follows the gradient's direction (Adam's per-column steps would not)
                eta = lr * (0.01 + 0.5 * (1.0 + math.cos(math.pi * step / n_steps)))
                delta -= eta * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                ok = margin.detach() > 0
                dist = d.detach().norm(dim=1)
                better = ok & (dist < best_d)
                best = torch.where(better[:, None], zp, best)
                best_d = torch.where(better, dist, best_d)
                lam = torch.where(ok, lam * 0.9, lam * 1.3).clamp(1e-2, 1e5)
    return best.detach().cpu().to(torch.float64).numpy(), torch.isfinite(best_d).cpu().numpy()


def sphere_search(p: Problem, idx: np.ndarray, *, n_samples: int, n_rounds: int = 14, keep: int = 32,
                  radius: float = 0.5, growth: float = 1.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``idx``: (n, keep, F) valid candidates of the first layer holding any, (n, keep)
    which are filled, and (n, F) the row closest to flipping (fewest violations, then highest
    margin; the input when nothing was drawn)."""
    sp, f = p.space, p.x0.shape[1]
    rng = np.random.default_rng(p.seed + 1)
    n = idx.size
    pool = np.repeat(p.x0[idx][:, None, :], keep, axis=1)
    filled = np.zeros((n, keep), bool)
    closest, close_m = p.x0[idx].copy(), np.full(n, -np.inf)
    lo, hi = np.zeros(n), np.full(n, radius)
    active = np.arange(n)
    movable = np.flatnonzero(sp.free)
    if movable.size == 0:
        return pool, filled, closest
    for _ in range(n_rounds):
        if active.size == 0:
            break
        a, s = active.size, n_samples
        x = np.repeat(p.x0[idx[active]], s, axis=0)
        k = rng.integers(1, movable.size + 1, size=a * s)
        order = np.argsort(rng.random((a * s, movable.size)), axis=1)
        mask = np.zeros((a * s, f), bool)
        mask[np.arange(a * s)[:, None], movable[order]] = order.argsort(axis=1) < k[:, None]
        u = rng.standard_normal((a * s, f)) * mask
        u = np.where(sp.direction == 1, np.abs(u), np.where(sp.direction == -1, -np.abs(u), u))
        u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        rad = rng.uniform(np.repeat(lo[active], s), np.repeat(hi[active], s))
        cand = x + u * rad[:, None] * p.scale
        for j, allowed in sp.categories.items():
            swap = mask[:, j] & (rng.random(a * s) < 0.5)
            cand[swap, j] = allowed[rng.integers(0, allowed.size, swap.sum())]
        cand = sp.snap(cand, x)
        des = np.repeat(p.desired[idx[active]], s)
        margin, viol, _ = verify(p, cand, x, des)
        ok = _valid(margin, viol).reshape(a, s)
        # closest to flipping: any row without violations first, then the fewest violations
        clean = (margin - 1e9 * viol.sum(axis=1)).reshape(a, s)
        top = clean.argmax(axis=1)
        gain = clean[np.arange(a), top] > close_m[active]
        closest[active[gain]] = cand.reshape(a, s, f)[np.flatnonzero(gain), top[gain]]
        close_m[active[gain]] = clean[np.flatnonzero(gain), top[gain]]
        dist = np.linalg.norm((cand - x) / p.scale, axis=1).reshape(a, s)
        done = ok.any(axis=1)
        for i in np.flatnonzero(done):
            good = np.flatnonzero(ok[i])
            good = good[np.argsort(dist[i, good])][:keep]
            pool[active[i], :good.size] = cand.reshape(a, s, f)[i, good]
            filled[active[i], :good.size] = True
        lo[active], hi[active] = hi[active], hi[active] * growth
        active = active[~done]
    return pool, filled, closest


def shrink(p: Problem, cand: np.ndarray, x0: np.ndarray, desired: np.ndarray, *, grid: int = 12,
           rounds: int = 3) -> np.ndarray:
    """Each valid candidate moved to the nearest valid point on the segment from the input to it
    (snapped onto the constraints; a grid of ``grid`` points per round, ``rounds`` rounds)."""
    if cand.shape[0] == 0:
        return cand
    lo, hi = np.zeros(cand.shape[0]), np.ones(cand.shape[0])
    out = cand.copy()
    for _ in range(rounds):
        t = lo[:, None] + (hi - lo)[:, None] * np.linspace(1.0 / grid, 1.0, grid)[None, :]
        xr = np.repeat(x0, grid, axis=0)
        rows = p.space.snap(xr + t.reshape(-1, 1) * np.repeat(cand - x0, grid, axis=0), xr)
        margin, viol, _ = verify(p, rows, xr, np.repeat(desired, grid))
        ok = _valid(margin, viol).reshape(-1, grid)
        has = ok.any(axis=1)
        first = ok.argmax(axis=1)
        pick = rows.reshape(-1, grid, cand.shape[1])[np.arange(cand.shape[0]), first]
        out[has] = pick[has]
        tf = t[np.arange(cand.shape[0]), first]
        step = (hi - lo) / grid
        lo, hi = np.where(has, tf - step, lo), np.where(has, tf, hi)
    return out


def sparsify(p: Problem, cand: np.ndarray, x0: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Greedily reset changed columns to the input's value while the row stays valid (each
    round tries every changed column of every candidate in one batch and keeps the reset that
    leaves the highest margin)."""
    out, f = cand.copy(), cand.shape[1]
    live = np.ones(cand.shape[0], bool)
    for _ in range(f):
        changed = (np.abs(out - x0) > 1e-12) & live[:, None]
        ri, cj = np.nonzero(changed)
        if ri.size == 0:
            break
        rows = out[ri].copy()
        rows[np.arange(ri.size), cj] = x0[ri, cj]
        margin, viol, _ = verify(p, rows, x0[ri], desired[ri])
        score = np.where(_valid(margin, viol), margin, -np.inf)
        best = np.full(cand.shape[0], -np.inf)
        np.maximum.at(best, ri, score)
        pick = np.flatnonzero(np.isfinite(score) & (score == best[ri]))
        pick = pick[np.unique(ri[pick], return_index=True)[1]]
        out[ri[pick]] = rows[pick]
        live = np.zeros(cand.shape[0], bool)
        live[ri[pick]] = True
        if not live.any():
            break
    return out


def sparse_variants(p: Problem, cand: np.ndarray, x0: np.ndarray, desired: np.ndarray,
                    sizes: tuple[int, ...] = (1, 2, 3, 5, 8), reach: float = 6.0, grid: int = 10
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Sparser versions of valid candidates: the change kept on its ``s`` largest columns only
    (in units of scale) and stretched along that direction up to ``reach`` times, the first
    valid point of a geometric grid. Returns (rows, index of the candidate each came from)."""
    if cand.shape[0] == 0:
        return cand, np.zeros(0, np.int64)
    d = (cand - x0) / p.scale
    rank = np.argsort(-np.abs(d), axis=1)
    n_changed = (np.abs(d) > 1e-12).sum(axis=1)
    ts = np.geomspace(1.0, reach, grid)
    rows, owner = [], []
    for s in sizes:
        use = np.flatnonzero(n_changed > s)
        if use.size == 0:
            continue
        keep = np.zeros((use.size, d.shape[1]), bool)
        keep[np.arange(use.size)[:, None], rank[use, :s]] = True
        step = np.where(keep, cand[use] - x0[use], 0.0)
        rows.append((x0[use][:, None, :] + ts[None, :, None] * step[:, None, :]).reshape(-1, d.shape[1]))
        owner.append(np.repeat(use, grid))
    if not rows:
        return cand[:0], np.zeros(0, np.int64)
    allr, own = np.concatenate(rows), np.concatenate(owner)
    allr = p.space.snap(allr, x0[own])
    margin, viol, _ = verify(p, allr, x0[own], desired[own])
    ok = _valid(margin, viol).reshape(-1, grid)
    has = ok.any(axis=1)
    first = ok.argmax(axis=1)
    picked = allr.reshape(-1, grid, d.shape[1])[np.arange(ok.shape[0]), first][has]
    return picked, own.reshape(-1, grid)[:, 0][has]
