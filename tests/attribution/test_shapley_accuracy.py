"""KernelSHAP's default estimator against brute-force Shapley values on three small MLPs
(10-14 features, different widths, activations, seeds and data), side by side with shap's
KernelExplainer (``l1_reg=False``) at the same budget of 512 coalitions per row.

The strict comparison (20 seeds, two value functions) is ``benchmarks/bench_shapley.py``
(``python -m benchmarks.run --only shapley``); here a few seeds, with the same bound."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from unveil.attribution.shapley import ExactShapley, KernelShap


def _train(x: torch.Tensor, y: torch.Tensor, width: int, seed: int, act: type[nn.Module], steps: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], width), act(), nn.Linear(width, width), act(),
                        nn.Linear(width, 1), nn.Flatten(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
    return net.eval()


def three_mlps() -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    """(name, net, 3 explained rows, 20 background rows) for three MLPs of 12, 10 and 14 inputs."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    a = data.data[:, :12]
    xa = torch.tensor((a - a.mean(0)) / a.std(0), dtype=torch.float32)
    out = [("breast-cancer 12, relu 48", _train(xa, torch.tensor(data.target, dtype=torch.float32), 48, 0, nn.ReLU, 80),
            xa[200:203], xa[:20])]
    rng = np.random.default_rng(1)
    b = torch.tensor(rng.normal(size=(400, 10)), dtype=torch.float32)
    yb = (torch.sin(2 * b[:, 0]) * b[:, 1] + b[:, 2] * b[:, 3] - b[:, 4].abs() + b[:, 6] * b[:, 7] * b[:, 8] > 0)
    out.append(("synthetic 10, tanh 32", _train(b, yb.float(), 32, 1, nn.Tanh, 150), b[300:303] * 1.3, b[:20]))
    c = torch.tensor(rng.normal(size=(400, 14)), dtype=torch.float32)
    yc = c[:, :7].sum(1) * c[:, 7:].sum(1) / 3 + (c[:, 0] + c[:, 13]).clamp(min=0) - c[:, 5] ** 2 > 0
    out.append(("synthetic 14, gelu 64", _train(c, yc.float(), 64, 2, nn.GELU, 150), c[300:303], c[:20]))
    return out


def _rel_l2(est: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.asarray(np.linalg.norm(est - exact, axis=1) / np.linalg.norm(exact, axis=1))


def test_kernel_shap_512_half_of_shaps_error_on_three_mlps():
    shap = pytest.importorskip("shap")
    ours, theirs = [], []
    for _, net, x, bg in three_mlps():
        base = bg.mean(0, keepdim=True)
        exact = ExactShapley(net)(x, target=None, baseline=base).extras["group_values"]
        assert 10 <= exact.shape[1] <= 14 and 2 ** exact.shape[1] > 512  # sampled, not enumerated

        def f(a: np.ndarray, net: nn.Module = net) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.as_tensor(a, dtype=torch.float32)).numpy()

        for seed in range(3):
            e = KernelShap(net, n_samples=512)(x, target=None, baseline=base, seed=seed)
            assert e.delta is not None and np.abs(e.delta).max() < 1e-6  # efficiency
            assert e.stderr is not None and np.all(e.extras["group_stderr"] > 0)
            ours.append(_rel_l2(e.extras["group_values"], exact))
            np.random.seed(seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = shap.KernelExplainer(f, base.numpy()).shap_values(
                    x.numpy(), nsamples=512, l1_reg=False, silent=True)
            theirs.append(_rel_l2(np.asarray(ref), exact))
    mine, ref_err = float(np.mean(ours)), float(np.mean(theirs))
    assert ref_err > 1e-3  # the problems are hard enough for sampling to show
    assert mine <= 0.5 * ref_err, (mine, ref_err)


@pytest.mark.parametrize("c", [1, 2, 5, 9])
def test_hamming_kernel_shapley_closed_form_equals_brute_force(c):
    """The surrogate's Shapley values in closed form equal the definition's on every coalition."""
    from unveil.attribution._coalitions import all_coalitions, exact_from_table
    from unveil.attribution._kernel_estimators import hamming_kernel_shapley

    rng = np.random.default_rng(c)
    for rho in (0.3, 0.9):
        centre = rng.random(c) < 0.5
        game = torch.as_tensor(rho ** (all_coalitions(c) != centre).sum(1), dtype=torch.float64)
        exact = exact_from_table(game.unsqueeze(0), c)[0].numpy()
        h, t = hamming_kernel_shapley(c, rho), int(centre.sum())
        closed = np.where(centre, (1 - rho) / c * h[max(t - 1, 0)], -(1 - rho) / c * h[min(t, c - 1)])
        np.testing.assert_allclose(closed, exact, atol=1e-12)
