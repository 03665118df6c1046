"""Influence functions against the finite-difference change of the test loss, and the solvers
against the exact Hessian."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _da_problems import logistic_problem
from torch import nn

from unveil.data_attribution import training_influence
from unveil.data_attribution.evaluation import Retrainer

L2 = 0.05


@pytest.fixture(scope="module")
def fitted() -> tuple[Retrainer, nn.Module, tuple[torch.Tensor, ...]]:
    model, x, y, xt, yt = logistic_problem()
    r = Retrainer(model, (x, y), xt, yt, params="all", l2=L2, tol=1e-13)
    return r, r.fitted_model(), (x, y, xt, yt)


def _independent_grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y) + 0.5 * L2 * sum((p ** 2).sum() for p in model.parameters())
    loss.backward()
    out = float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())
    model.zero_grad(set_to_none=True)
    return out


def test_exact_influence_is_the_derivative_of_the_test_loss_in_a_rows_weight(fitted) -> None:
    """-d loss_test / d eps (eps added to one row's weight in the mean loss) by central finite
    differences, eps = 1e-5, float64: equal to the exact-Hessian scores to 1e-6 relative."""
    r, model, (x, y, xt, yt) = fitted
    assert _independent_grad_norm(model, x, y) < 1e-12  # the model is at the optimum
    res = training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0, solver="exact")
    n, eps = x.shape[0], 1e-5
    for j in (0, 7, 23):
        up, down = np.ones(n), np.ones(n)
        up[j] += n * eps  # (1/n) sum w_i loss_i + eps * loss_j
        down[j] -= n * eps
        fd = -(r(up) - r(down)) / (2 * eps)
        got = res.scores[:, j].numpy()
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())


@pytest.mark.parametrize(("solver", "options", "rtol"), [
    ("cg", {"tol": 1e-12}, 1e-8),
    ("lissa", {"depth": 400, "lissa_batch": None}, 1e-6),
    ("arnoldi", {"n_iter": 12, "top_k": 12}, 1e-8),
])
def test_iterative_solvers_match_the_exact_hessian(fitted, solver: str, options: dict[str, Any],
                                                  rtol: float) -> None:
    """CG to a residual of 1e-12, full-batch LiSSA of depth 400 and Arnoldi spanning all 12
    parameters agree with the exact solve within ``rtol`` of the largest score."""
    _, model, (x, y, xt, yt) = fitted
    exact = training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0).scores
    got = training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0, solver=solver, **options).scores
    err = float((got - exact).abs().max() / exact.abs().max())
    assert err < rtol, f"{solver}: relative error {err:.2e}"


def test_stochastic_lissa_and_truncated_arnoldi_keep_the_ranking(fitted) -> None:
    """Mini-batch LiSSA (10 rows of 40 per step, 4 repeats) and Arnoldi keeping 6 of 12
    eigenvalues are approximations: their scores still correlate >= 0.9 with the exact ones."""
    _, model, (x, y, xt, yt) = fitted
    exact = training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0).scores.reshape(-1).numpy()
    settings: list[dict[str, Any]] = [{"solver": "lissa", "depth": 200, "lissa_batch": 10, "repeats": 4},
                                      {"solver": "arnoldi", "n_iter": 12, "top_k": 6}]
    for opts in settings:
        got = training_influence(model, (x, y), xt, yt, l2=L2, damping=0.0, **opts).scores.reshape(-1).numpy()
        assert np.corrcoef(exact, got)[0, 1] > 0.9, opts


def test_damping_and_last_layer_on_a_small_mlp() -> None:
    """On a non-convex MLP the solvers agree once damping makes H + damping I positive definite,
    and params='last' attributes through the last layer only."""
    torch.manual_seed(0)
    x = torch.randn(50, 4, dtype=torch.float64)
    y = (x[:, 0] * x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double().eval()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    model.zero_grad(set_to_none=True)
    ex = training_influence(model, (x, y), x[:3], y[:3], damping=0.5)
    cg = training_influence(model, (x, y), x[:3], y[:3], damping=0.5, solver="cg")
    assert float((ex.scores - cg.scores).abs().max() / ex.scores.abs().max()) < 1e-6
    assert ex.params["min_eigenvalue"] > 0
    last = training_influence(model, (x, y), x[:3], y[:3], params="last", damping=0.01)
    assert last.params["parameters"] == ["2.weight", "2.bias"] and last.params["n_parameters"] == 14
