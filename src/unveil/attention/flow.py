"""Attention flow (Abnar & Zuidema, 2020) and the maximum-flow solver it needs.

The attention graph has one node per token per layer; an edge from token ``j`` at layer ``l-1``
to token ``i`` at layer ``l`` has capacity ``Ã_l[i, j]`` (the head-fused attention with the
residual identity mixed in, rows renormalised). The flow of input token ``j`` to output token
``q`` is the value of a maximum flow from ``(0, j)`` to ``(L, q)``.

Two facts shrink the graph without changing any flow value: input-layer nodes other than the
source have no incoming edges (no flow can pass through them), and top-layer nodes other than
the sink have no outgoing edges. The solver is Dinic's algorithm (Dinic, 1970) on a dense
residual matrix: a vectorised breadth-first search builds each level graph, and a depth-first
search with current-arc pointers saturates it.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, OptionError

__all__ = ["attention_flow", "flow_graph", "max_flow"]


def _levels(res: np.ndarray, source: int, tol: float) -> np.ndarray:
    """Breadth-first distance from ``source`` over edges with residual capacity > ``tol``."""
    level = np.full(res.shape[0], -1, dtype=np.int64)
    level[source] = 0
    frontier = np.array([source])
    depth = 0
    adj = res > tol
    while frontier.size:
        depth += 1
        nxt = np.flatnonzero(adj[frontier].any(axis=0) & (level < 0))
        level[nxt] = depth
        frontier = nxt
    return level


def _augment(res: np.ndarray, path: list[int], tol: float) -> tuple[float, int]:
    """Push the bottleneck along ``path``; return it and the index of the first saturated edge."""
    tails, heads = np.array(path[:-1]), np.array(path[1:])
    b = float(res[tails, heads].min())
    res[tails, heads] -= b
    res[heads, tails] += b
    saturated = np.flatnonzero(res[tails, heads] <= tol)
    return b, int(saturated[0]) if saturated.size else len(path) - 1


def _blocking_flow(res: np.ndarray, level: np.ndarray, source: int, sink: int, tol: float) -> float:
    """Saturate the level graph by depth-first search with current-arc pointers."""
    n = res.shape[0]
    nbrs: list[list[int] | None] = [None] * n
    ptr = [0] * n
    total = 0.0
    path = [source]
    while path:
        u = path[-1]
        if u == sink:
            b, k = _augment(res, path, tol)
            total += b
            del path[k + 1:]
            continue
        nb = nbrs[u]
        if nb is None:
            nb = np.flatnonzero((res[u] > tol) & (level == level[u] + 1)).tolist()
            nbrs[u] = nb
        p = ptr[u]
        row = res[u]
        while p < len(nb) and row[nb[p]] <= tol:
            p += 1
        ptr[u] = p
        if p < len(nb):
            path.append(nb[p])
        else:  # dead end: never enter u again in this phase
            path.pop()
            if path:
                ptr[path[-1]] += 1
    return total


def max_flow(capacity: np.ndarray, source: int, sink: int, *, tol: float = 1e-12) -> float:
    """Value of a maximum flow from ``source`` to ``sink`` (Dinic's algorithm).

    Parameters
    ----------
    capacity : ndarray
        (V, V) non-negative capacities; ``capacity[u, v]`` is the edge ``u -> v``.
    source, sink : int
        Distinct node indices.
    tol : float
        Residual capacities at or below ``tol * max(1, max capacity)`` count as saturated.

    Returns
    -------
    float
        The maximum flow value (equal to the minimum cut).
    """
    cap = np.asarray(capacity, dtype=np.float64)
    if cap.ndim != 2 or cap.shape[0] != cap.shape[1]:
        raise InputError(f"capacity must be a square (V, V) matrix, got shape {cap.shape}")
    if not np.isfinite(cap).all() or (cap < 0).any():
        raise InputError("capacities must be finite and non-negative")
    n = cap.shape[0]
    if not (0 <= source < n and 0 <= sink < n) or source == sink:
        raise OptionError(f"source and sink must be distinct nodes in [0, {n}), got {source}, {sink}")
    res = cap.copy()
    eps = tol * max(1.0, float(cap.max(initial=0.0)))
    total = 0.0
    while True:
        level = _levels(res, source, eps)
        if level[sink] < 0:
            return total
        total += _blocking_flow(res, level, source, sink, eps)


def flow_graph(att: np.ndarray, source: int, sink: int) -> tuple[np.ndarray, int, int]:
    """The pruned attention graph of one sample as a dense capacity matrix.

    Parameters
    ----------
    att : ndarray
        (L, T, T) capacities per layer (``att[l, i, j]``: token ``j`` below to token ``i`` above).
    source : int
        Input token (layer 0).
    sink : int
        Output token (layer L).

    Returns
    -------
    capacity, s, t
        The (V, V) matrix with V = (L - 1) T + 2 and the indices of source and sink.
    """
    n_layers, t = att.shape[0], att.shape[-1]
    v = (n_layers - 1) * t + 2
    cap = np.zeros((v, v))
    s_idx, t_idx = 0, v - 1

    def block(layer: int) -> slice:  # nodes of middle layer 1..L-1
        return slice(1 + (layer - 1) * t, 1 + layer * t)

    if n_layers == 1:
        cap[s_idx, t_idx] = att[0, sink, source]
        return cap, s_idx, t_idx
    cap[s_idx, block(1)] = att[0, :, source]
    for layer in range(2, n_layers):
        cap[block(layer - 1), block(layer)] = att[layer - 1].T
    cap[block(n_layers - 1), t_idx] = att[n_layers - 1, sink, :]
    return cap, s_idx, t_idx


def attention_flow(
    att: np.ndarray, query: int, *, keys: np.ndarray | None = None, normalize: bool = True
) -> np.ndarray:
    """Attention flow from every input token to output token ``query`` for one sample.

    Parameters
    ----------
    att : ndarray
        (L, T, T) residual-augmented, head-fused attention (see
        :func:`unveil.attention.rollout.residual_attention`), first layer first.
    query : int
        The output token (e.g. 0 for ``[CLS]``).
    keys : ndarray of bool, optional
        (T,) which input tokens to compute (others get 0; e.g. skip padding).
    normalize : bool
        Divide by the sum over input tokens, as Abnar & Zuidema do (default True).

    Returns
    -------
    ndarray
        (T,) flow values.
    """
    a = np.asarray(att, dtype=np.float64)
    t = a.shape[-1]
    out = np.zeros(t)
    for j in range(t):
        if keys is not None and not keys[j]:
            continue
        cap, s, k = flow_graph(a, j, query)
        out[j] = max_flow(cap, s, k)
    if normalize and out.sum() > 0:
        out /= out.sum()
    return out
