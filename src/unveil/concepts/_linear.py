"""Many small L2-regularised logistic regressions at once: the linear classifiers behind CAVs.

Each problem separates a concept's examples from a random set by their activations at a layer.
Activations are wide (thousands of features) and the sets small (tens of examples), so each
problem is solved in the span of its own examples: with the Gram matrix ``K = X Xᵀ = U Λ Uᵀ`` the
features ``Z = U Λ^½`` give the same fitted values and penalty as ``X`` (the optimal weights lie
in the rows' span), and Newton's method on ``n + 1`` unknowns converges in a few steps. The
objective is convex with a unique minimum, so the CAV does not depend on initialisation or on
a random train order (unlike stochastic gradient descent); class weights are balanced.
"""

from __future__ import annotations

import torch

__all__ = ["fit_logistic"]

_STEPS = torch.tensor([1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.0])


def _objective(Z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, z: torch.Tensor,
               b: torch.Tensor, l2: float) -> torch.Tensor:
    f = (Z @ z.unsqueeze(-1)).squeeze(-1) + b.unsqueeze(-1)
    loss = (w * torch.nn.functional.softplus(-y * f)).sum(-1)
    return loss + 0.5 * l2 * (z * z).sum(-1)


def fit_logistic(gram: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-2,
                 max_iter: int = 50, tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """Fit ``K`` logistic regressions given their Gram matrices ``(K, n, n)`` and labels ±1 ``(K, n)``.

    Minimises ``Σᵢ wᵢ log(1 + exp(-yᵢ fᵢ)) + l2/2 ‖β‖²`` with ``f = X β + b`` and balanced
    weights ``wᵢ`` (each class sums to ½). Returns ``(alpha, b, f)``: the dual coefficients with
    ``β = Xᵀ alpha`` ``(K, n)``, the intercepts ``(K,)`` and the fitted values ``(K, n)``.
    """
    g = gram.to(torch.float64)
    yy = y.to(torch.float64)
    k, n = yy.shape
    pos = (yy > 0).to(torch.float64)
    n_pos = pos.sum(-1, keepdim=True).clamp_min(1)
    n_neg = (1 - pos).sum(-1, keepdim=True).clamp_min(1)
    w = 0.5 * (pos / n_pos + (1 - pos) / n_neg)
    lam, U = torch.linalg.eigh(0.5 * (g + g.transpose(-1, -2)))
    lam = lam.clamp_min(0.0)
    keep = lam > lam.amax(-1, keepdim=True) * 1e-10
    root = torch.where(keep, lam.sqrt(), torch.zeros_like(lam))
    Z = U * root.unsqueeze(-2)  # (K, n, n)
    z = torch.zeros(k, n, dtype=torch.float64)
    b = torch.zeros(k, dtype=torch.float64)
    eye = torch.eye(n + 1, dtype=torch.float64)
    eye[n, n] = 0.0
    ones = torch.ones(k, n, 1, dtype=torch.float64)
    Zb = torch.cat([Z, ones], dim=-1)  # (K, n, n + 1)
    steps = _STEPS.to(torch.float64)
    for _ in range(max_iter):
        f = (Zb @ torch.cat([z, b[:, None]], -1).unsqueeze(-1)).squeeze(-1)
        s = torch.sigmoid(-yy * f)
        grad_f = w * (-yy * s)
        grad = (Zb.transpose(-1, -2) @ grad_f.unsqueeze(-1)).squeeze(-1)
        grad[:, :n] += l2 * z
        d = w * s * (1 - s)
        H = Zb.transpose(-1, -2) @ (d.unsqueeze(-1) * Zb) + l2 * eye
        H[:, n, n] += 1e-12
        delta = torch.linalg.solve(H, grad.unsqueeze(-1)).squeeze(-1)
        # a backtracking step per problem: the best of a few step lengths (0 keeps the point)
        trial_z = z.unsqueeze(1) - steps[None, :, None] * delta[:, None, :n]
        trial_b = b.unsqueeze(1) - steps[None, :] * delta[:, None, n]
        obj = _objective(Z.unsqueeze(1), yy.unsqueeze(1), w.unsqueeze(1), trial_z, trial_b, l2)
        best = obj.argmin(-1)
        rows = torch.arange(k)
        z, b = trial_z[rows, best], trial_b[rows, best]
        if float((delta.abs().amax(-1) * steps[best]).max()) < tol:
            break
    alpha = U @ (torch.where(keep, z / torch.where(keep, root, torch.ones_like(root)),
                             torch.zeros_like(z))).unsqueeze(-1)
    f = (Z @ z.unsqueeze(-1)).squeeze(-1) + b.unsqueeze(-1)
    return alpha.squeeze(-1), b, f
