"""Integrated Gradients of every generated token from shared forward passes.

Generated token ``g`` (after ``P`` prompt tokens) is explained by ``s_g = log p(y_g | x, y_<g)``
along the straight path of the token embeddings from the baseline's. When the baseline is one
token id at every moving position, the path point at step ``alpha`` of the sequence that
explains token ``g`` is a prefix of the one that explains the last token, and a causal LM's
logits at position ``P + g - 1`` depend on the positions up to it only. So one forward of the
longest sequence at each path point scores every token, and one backward per token through the
retained graph gives that token's gradient: one forward instead of ``G``, the prompt's work
done once. Tokens are grouped into segments, each a sequence ending at its last token, so the
first tokens do not pay backward passes through positions they cannot see; the split minimises
a cost model (a forward costs its length, each backward its length again). Path points run in
chunks of rows bounded by the memory budget (:func:`unveil.set_memory_budget`), measured from
the bytes autograd saves for one row, so a long prompt runs in small chunks instead of failing.

The values equal those of the registry's ``integrated_gradients`` run once per token (same
quadrature, same baseline, same embedding layer); only the order of the sums differs.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attribution.path import quadrature
from ..core.batching import BatchSize, get_memory_budget, resolve_batch_size
from ..core.hooks import frozen_parameters

__all__ = ["SharedIG", "plan_segments", "shared_ig", "takes_embeddings"]

#: A backward through the retained graph, relative to the forward (inputs' gradients only:
#: the weights are frozen, so each linear layer costs one matrix product either way).
_BACKWARD = 1.0
#: Fixed cost of one more forward pass, in token-rows of the model (Python and kernel launches).
_PASS = 2.0


@dataclass
class SharedIG:
    """IG of each generated token: ``values`` (G, L) per position of the longest sequence
    (row ``g`` defined on its first ``P + g`` positions), the score at the input and at the
    baseline, the completeness gap, and the rows run forward."""

    values: np.ndarray
    outputs: np.ndarray
    baseline_outputs: np.ndarray
    delta: np.ndarray
    n_evals: int
    segments: list[tuple[int, int]]


def takes_embeddings(model: nn.Module) -> bool:
    """Whether ``model(inputs_embeds=...)`` is how the model takes embeddings (Hugging Face)."""
    emb = getattr(model, "get_input_embeddings", None)
    if not callable(emb) or not isinstance(emb(), nn.Module):
        return False
    try:
        return "inputs_embeds" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def plan_segments(n_prompt: int, n_new: int) -> list[tuple[int, int]]:
    """Runs ``[g0, g1)`` of generated tokens sharing one forward, minimising
    ``sum(L * (1 + backward * n) + pass)`` with ``L = n_prompt + g1 - 1`` (dynamic programming)."""
    best = [0.0] + [math.inf] * n_new
    cut = [0] * (n_new + 1)
    for j in range(1, n_new + 1):
        length = n_prompt + j - 1
        for i in range(j):
            c = best[i] + length * (1 + _BACKWARD * (j - i)) + _PASS
            if c < best[j]:
                best[j], cut[j] = c, i
    out: list[tuple[int, int]] = []
    j = n_new
    while j > 0:
        out.append((cut[j], j))
        j = cut[j]
    return out[::-1]


def _scores(model: nn.Module, z: torch.Tensor, tgt: torch.Tensor, foil: torch.Tensor | None,
            keeps_last: bool) -> torch.Tensor:
    """(rows, n) scores of the ``n = len(tgt)`` tokens predicted at the last n positions."""
    n = int(tgt.shape[0])
    kw: dict[str, Any] = {"logits_to_keep": n} if keeps_last else {}
    out = model(inputs_embeds=z, use_cache=False, **kw)
    logits: torch.Tensor = out.logits if hasattr(out, "logits") else out[0]
    lp = logits[:, -n:].float().log_softmax(-1)
    idx = torch.arange(n)
    s = lp[:, idx, tgt]
    if foil is not None:
        s = s - lp[:, idx, foil]
    return s


def _saved_bytes(model: nn.Module, fn: Any) -> tuple[Any, int]:
    """``fn()`` and the bytes of the distinct storages autograd saved for its backward, the
    model's own weights and buffers left out (they exist anyway, whatever the chunk size)."""
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def shared_ig(model: nn.Module, full: torch.Tensor, n_prompt: int, foils: list[int] | None, *,
              base_id: int, prompt_only: bool, n_steps: int, rule: str = "gausslegendre",
              batch_size: BatchSize = "auto", keeps_last: bool = False) -> SharedIG:
    """IG-``n_steps`` of each generated token of ``full`` (prompt + G generated ids) on the
    token embeddings, from token ``base_id`` at every moving position (the prompt's with
    ``prompt_only``, else every position before the explained token)."""
    resolve_batch_size(batch_size)
    p, g = n_prompt, int(full.shape[0]) - n_prompt
    length = p + g - 1
    tgt = full[p:].long()
    foil = None if foils is None else torch.tensor(foils, dtype=torch.long)
    hf: Any = model  # a Hugging Face model: its methods are not typed on nn.Module
    emb: nn.Module = hf.get_input_embeddings()
    alphas_np, weights_np = quadrature(n_steps, rule)
    with frozen_parameters(model), torch.no_grad():
        x = emb(full[None, :length]).detach()
        base = emb(torch.full((1, length), base_id, dtype=torch.long)).detach().to(x.dtype)
        if prompt_only:
            base[:, p:] = x[:, p:]
    diff = x - base
    alphas = torch.as_tensor(alphas_np, dtype=x.dtype)
    weights = torch.as_tensor(weights_np, dtype=torch.float64)
    with frozen_parameters(model):
        ends = torch.cat([x, base]).requires_grad_()
        s_ends, saved = _saved_bytes(model, lambda: _scores(model, ends, tgt, foil, keeps_last))
        s_ends = s_ends.detach().double()
        # two rows' saved activations: one row's, doubled for the gradients in flight
        per_row = max(1, saved)
        if batch_size == "auto":
            rows = max(1, min(n_steps, get_memory_budget() // per_row))
        else:
            rows = min(int(batch_size), n_steps)
        values = torch.zeros((g, length), dtype=torch.float64)
        segments = plan_segments(p, g)
        n_evals = 2
        for g0, g1 in segments:
            seg_len = p + g1 - 1
            d_seg = diff[:, :seg_len]
            for a in range(0, n_steps, rows):
                b = min(a + rows, n_steps)
                z = (base[:, :seg_len] + alphas[a:b].view(-1, 1, 1) * d_seg).requires_grad_()
                s = _scores(model, z, tgt[g0:g1], None if foil is None else foil[g0:g1],
                            keeps_last)
                n_evals += b - a
                for j in range(g1 - g0):
                    (gz,) = torch.autograd.grad(s[:, j].sum(), z, retain_graph=j < g1 - g0 - 1)
                    wg = (gz.double() * weights[a:b].view(-1, 1, 1)).sum(0)
                    values[g0 + j, :seg_len] += (wg * d_seg[0].double()).sum(-1)
    out_x, out_b = s_ends[0], s_ends[1]
    vals = values.numpy()
    sums = np.array([vals[i, : p + i].sum() for i in range(g)])
    gap = (out_x - out_b).numpy()
    return SharedIG(values=vals, outputs=out_x.numpy(), baseline_outputs=out_b.numpy(),
                    delta=sums - gap, n_evals=n_evals, segments=segments)
