"""Explain one shard: the unit of work both engines run (module-level, so Dask can ship it)."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import torch

from ..core.explain import explain
from ..core.explanation import Explanation
from ..core.model import as_model
from ..core.registry import get_method
from ._run import annotate, shard_file


def shard_seed(seed: int | None, index: int) -> int | None:
    """The seed of shard ``index``: the same whichever engine or worker runs it."""
    return None if seed is None else int(seed) * 1_000_003 + index


# What one worker process keeps between tasks: the unpickled model of the current token (so its
# prepared copies and the chunk-size probe, both keyed by the model object, survive from task to
# task and from run to run with the same model), how often a model was unpickled (read by tests),
# and the torch thread count the process was set up for.
_WORKER_MODELS: dict[str, Any] = {}
_WORKER_STATE: dict[str, Any] = {"loads": 0, "threads": None}

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def _keep_freed_memory() -> bool:
    """Let glibc keep freed tensor buffers for reuse in this process.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's
    mmap threshold at 128 KiB: every tensor buffer above that is a fresh ``mmap`` whose pages are
    zero-filled on first touch and returned on free. Autograd allocates and frees such buffers
    by the hundred per shard, which made the same shard 2-3x slower in a worker than in the
    driver. The thresholds set here are glibc's own dynamic ceilings (32 MiB mmap, trim above
    twice that), so a worker holds at most about one shard's working set beyond its live data.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 64 << 20))


def worker_model(token: str, blob: bytes, threads: int | None) -> Any:
    """The model for ``token`` in this worker process, unpickled on its first task only.

    The first task of a process also sets torch's thread count and glibc's allocator thresholds
    (:func:`_keep_freed_memory`), once rather than per task.
    """
    if _WORKER_STATE["threads"] is None:
        _WORKER_STATE["malloc_tuned"] = _keep_freed_memory()
    if threads is not None and _WORKER_STATE["threads"] != threads:
        torch.set_num_threads(threads)
        _WORKER_STATE["threads"] = threads
    if token not in _WORKER_MODELS:
        import cloudpickle

        _WORKER_MODELS.clear()  # one model at a time: a finished run's model is not kept alive
        # wrapped once: the model's fingerprint (a hash of every parameter) is computed once, too
        _WORKER_MODELS[token] = as_model(cloudpickle.loads(blob))
        _WORKER_STATE["loads"] += 1
    return _WORKER_MODELS[token]


def worker_state() -> dict[str, Any]:
    """What this worker process holds (for tests and diagnostics): unpickle count, threads."""
    return {**_WORKER_STATE, "tokens": list(_WORKER_MODELS)}


def explain_shard_packed(packed: tuple[str, bytes], *args: Any, threads: int | None = 1,
                         rows: tuple[int, int, Any, list[str] | None] | None = None) -> tuple[Explanation, bytes | None]:
    """:func:`explain_shard` for a model sent as ``(token, bytes)``: unpacked once per worker.

    Dask's own serialisation of ``nn.Module`` turns hook registries into plain dicts, so the
    driver sends the user's in-memory model (its own object, on its own cluster) as
    cloudpickle bytes; nothing read from disk is unpickled here. ``token`` is the digest of the
    bytes, so a second run of the same model reuses the worker's copy and its probes.

    With ``rows=(start, stop, labels, feature names)`` the worker also annotates the result and
    compresses its ``.npz`` file, which the driver then only writes: compression is the
    driver's largest cost per shard, and workers scale where the driver does not.
    """
    token, blob = packed
    exp = explain_shard(worker_model(token, blob, threads), *args)
    if rows is None:
        return exp, None
    annotate(exp, *rows)
    return exp, shard_file(exp)


def explain_shard(model: Any, x: torch.Tensor, method: str, target: Any, options: dict[str, Any],
                  index: int, seed: int | None) -> Explanation:
    """Run ``method`` on one shard and return its Explanation, ready to pickle back."""
    opts = dict(options)
    s = shard_seed(seed, index)
    if s is not None and get_method(method).takes_seed:
        opts["seed"] = s
    exp = explain(model, x, method=method, target=target, **opts)
    _ = exp.fingerprint  # computed here, so the model is not sent back with the result
    return exp
