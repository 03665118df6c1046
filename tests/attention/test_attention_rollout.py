"""Rollout arithmetic against brute-force references (float64)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from unveil.attention import fuse_heads, grad_weighted_rollout, residual_attention, rollout
from unveil.errors import OptionError


def _maps(n=2, layers=3, heads=2, t=4, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, layers, heads, t, t, generator=g, dtype=torch.float64), -1)


def _path_sum(a: np.ndarray, i: int, j: int) -> float:
    """Sum over every path j = t_0 -> t_1 -> ... -> t_L = i of the product of edge weights."""
    n_layers, t = a.shape[0], a.shape[-1]
    total = 0.0
    for mid in itertools.product(range(t), repeat=n_layers - 1):
        path = (j, *mid, i)
        w = 1.0
        for layer in range(n_layers):
            w *= a[layer, path[layer + 1], path[layer]]
        total += w
    return total


@pytest.mark.parametrize("residual", [0.5, 0.0, 0.3])
def test_rollout_equals_brute_force_path_sums(residual):
    probs = _maps()
    fused = fuse_heads(probs)
    out = rollout(fused, residual)
    eye = np.eye(4)
    for s in range(2):
        a = fused[s].numpy()
        a = (1 - residual) * a + residual * eye
        a = a / a.sum(-1, keepdims=True)
        ref = np.array([[_path_sum(a, i, j) for j in range(4)] for i in range(4)])
        np.testing.assert_allclose(out[s].numpy(), ref, rtol=1e-12, atol=1e-14)
    assert float((out[0] - out[1]).abs().max()) > 1e-3  # guard: samples differ


def test_rollout_rows_sum_to_one_and_single_layer_is_residual_attention():
    probs = _maps(layers=4, t=6)
    r = rollout(fuse_heads(probs))
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    one = probs[:, :1]
    torch.testing.assert_close(rollout(fuse_heads(one)), residual_attention(fuse_heads(one)[:, 0]))


def test_residual_attention_formula():
    a = fuse_heads(_maps())[:, 0]
    got = residual_attention(a, 0.5)
    torch.testing.assert_close(got, 0.5 * a + 0.5 * torch.eye(4, dtype=a.dtype))  # rows stay stochastic


def test_fuse_heads_options():
    p = _maps()
    torch.testing.assert_close(fuse_heads(p, "mean"), p.mean(2))
    torch.testing.assert_close(fuse_heads(p, "max"), p.max(2).values)
    torch.testing.assert_close(fuse_heads(p, "min"), p.min(2).values)
    with pytest.raises(OptionError, match="head_fusion must be"):
        fuse_heads(p, "median")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"residual must be in \[0, 1\)"):
        residual_attention(p[:, 0, 0], 1.0)


def test_grad_weighted_rollout_equals_explicit_loops():
    probs = _maps(n=1, layers=3, heads=3, t=4, seed=1)
    g = torch.Generator().manual_seed(2)
    grads = torch.randn(probs.shape, generator=g, dtype=torch.float64)
    out = grad_weighted_rollout(probs, grads)[0].numpy()
    a, gr = probs[0].numpy(), grads[0].numpy()
    r = np.eye(4)
    for layer in range(3):
        cam = np.zeros((4, 4))
        for h in range(3):
            for i in range(4):
                for j in range(4):
                    cam[i, j] += max(0.0, gr[layer, h, i, j] * a[layer, h, i, j]) / 3
        r = r + cam @ r
    np.testing.assert_allclose(out, r, rtol=1e-12)
    assert np.abs(out - np.eye(4)).max() > 1e-2  # guard: relevance moved off the identity


def test_grad_weighted_rollout_ignores_negative_evidence():
    probs = _maps(n=1)
    out = grad_weighted_rollout(probs, -torch.ones_like(probs))
    torch.testing.assert_close(out[0], torch.eye(4, dtype=torch.float64))
