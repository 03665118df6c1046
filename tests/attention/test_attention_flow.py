"""Max-flow and attention flow against networkx."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unveil.attention import attention_flow, max_flow, residual_attention
from unveil.attention.flow import flow_graph
from unveil.errors import InputError, OptionError

nx = pytest.importorskip("networkx")


def _nx_value(cap: np.ndarray, s: int, t: int) -> float:
    g = nx.DiGraph()
    g.add_nodes_from(range(cap.shape[0]))
    for u, v in zip(*np.nonzero(cap)):
        g.add_edge(int(u), int(v), capacity=float(cap[u, v]))
    return float(nx.maximum_flow_value(g, s, t))


@pytest.mark.parametrize("seed", range(12))
def test_max_flow_matches_networkx_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 12))
    cap = rng.random((n, n)) * (rng.random((n, n)) < 0.35)  # antiparallel edges included
    np.fill_diagonal(cap, 0)
    ref = _nx_value(cap, 0, n - 1)
    assert max_flow(cap, 0, n - 1) == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_max_flow_textbook_graph():
    # CLRS figure 26.1: value 23
    cap = np.zeros((6, 6))
    for u, v, c in [(0, 1, 16), (0, 2, 13), (2, 1, 4), (1, 3, 12), (3, 2, 9), (2, 4, 14),
                    (4, 3, 7), (3, 5, 20), (4, 5, 4)]:
        cap[u, v] = c
    assert max_flow(cap, 0, 5) == pytest.approx(23.0)
    assert max_flow(cap, 5, 0) == 0.0  # no edge leaves the sink


def _full_paper_graph(att: np.ndarray) -> tuple[np.ndarray, int]:
    """The unpruned graph of Abnar & Zuidema: every token at every layer (L + 1) x T nodes."""
    n_layers, t = att.shape[0], att.shape[-1]
    cap = np.zeros(((n_layers + 1) * t, (n_layers + 1) * t))
    for layer in range(1, n_layers + 1):
        for i in range(t):
            for j in range(t):
                cap[(layer - 1) * t + j, layer * t + i] = att[layer - 1, i, j]
    return cap, t


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_attention_flow_matches_networkx_on_the_full_graph(n_layers):
    g = torch.Generator().manual_seed(n_layers)
    att = residual_attention(torch.softmax(2 * torch.randn(n_layers, 5, 5, generator=g), -1))
    a = att.double().numpy()
    cap, t = _full_paper_graph(a)
    for q in (0, 3):
        ref = np.array([_nx_value(cap, j, n_layers * t + q) for j in range(t)])
        got = attention_flow(a, q, normalize=False)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(attention_flow(a, q), ref / ref.sum(), rtol=1e-9)
        assert ref.std() > 1e-3  # guard: tokens differ


def test_two_layer_flow_closed_form():
    g = torch.Generator().manual_seed(7)
    a = residual_attention(torch.softmax(torch.randn(2, 6, 6, generator=g), -1)).double().numpy()
    q = 2
    expected = [np.minimum(a[0, :, j], a[1, q, :]).sum() for j in range(6)]
    np.testing.assert_allclose(attention_flow(a, q, normalize=False), expected, rtol=1e-12)


def test_flow_skips_masked_keys_and_graph_size():
    a = residual_attention(torch.softmax(torch.randn(3, 4, 4), -1)).double().numpy()
    keys = np.array([True, True, False, True])
    out = attention_flow(a, 0, keys=keys, normalize=False)
    assert out[2] == 0.0 and out[[0, 1, 3]].min() > 0
    cap, s, t = flow_graph(a, 1, 0)
    assert cap.shape == (2 * 4 + 2, 2 * 4 + 2) and (s, t) == (0, 9)


def test_max_flow_errors():
    with pytest.raises(InputError, match="square"):
        max_flow(np.ones((2, 3)), 0, 1)
    with pytest.raises(InputError, match="non-negative"):
        max_flow(-np.ones((2, 2)), 0, 1)
    with pytest.raises(OptionError, match="distinct nodes"):
        max_flow(np.ones((2, 2)), 1, 1)
