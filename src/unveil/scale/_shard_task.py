"""Explain one shard: the unit of work both engines run (module-level, so Dask can ship it)."""

from __future__ import annotations

from typing import Any

import torch

from ..core.explain import explain
from ..core.explanation import Explanation
from ..core.registry import get_method


def shard_seed(seed: int | None, index: int) -> int | None:
    """The seed of shard ``index``: the same whichever engine or worker runs it."""
    return None if seed is None else int(seed) * 1_000_003 + index


_WORKER_MODELS: dict[str, Any] = {}


def explain_shard_packed(packed: tuple[str, bytes], *args: Any) -> Explanation:
    """:func:`explain_shard` for a model sent as bytes: unpacked once per worker process.

    Dask's own serialisation of ``nn.Module`` turns hook registries into plain dicts, so the
    driver sends the user's in-memory model (its own object, on its own cluster) as
    cloudpickle bytes; nothing read from disk is unpickled here.
    """
    token, blob = packed
    if token not in _WORKER_MODELS:
        import cloudpickle

        _WORKER_MODELS.clear()
        _WORKER_MODELS[token] = cloudpickle.loads(blob)
    return explain_shard(_WORKER_MODELS[token], *args)


def explain_shard(model: Any, x: torch.Tensor, method: str, target: Any, options: dict[str, Any],
                  index: int, seed: int | None, threads: int | None = None) -> Explanation:
    """Run ``method`` on one shard and return its Explanation, ready to pickle back."""
    if threads is not None:
        torch.set_num_threads(threads)
    opts = dict(options)
    s = shard_seed(seed, index)
    if s is not None and get_method(method).takes_seed:
        opts["seed"] = s
    exp = explain(model, x, method=method, target=target, **opts)
    _ = exp.fingerprint  # computed here, so the model is not sent back with the result
    return exp
