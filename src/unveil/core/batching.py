"""Evaluate many inputs in chunks, with an automatically chosen chunk size.

``batch_size="auto"`` learns the fastest chunk size by timing the job's own chunks (no row is
computed twice), capped by a memory budget estimated from the sizes of the model's intermediate
outputs per row. On CUDA an out-of-memory error halves the chunk and retries. Inputs are produced per chunk by a callback,
so perturbed or interpolated batches never need to exist all at once; random draws come from
the counter-based streams of :mod:`unveil.core.draws` (drawn per chunk, the same for any chunk
size) or are made before chunking, so that results do not depend on the chunk size.

Work with many samples per row (noise, perturbations) runs in blocks sized by
:func:`block_size` from the memory budget, so memory stays bounded whatever the number of
samples; :func:`progress` shows a bar over the blocks when there are several.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

import torch
from torch import nn

from ..errors import NonFiniteOutputError, OptionError
from .hooks import forward_hooks
from .model import Model

__all__ = [
    "BatchSize",
    "DEFAULT_MEMORY_BUDGET",
    "auto_batch_size",
    "block_size",
    "chunks",
    "get_memory_budget",
    "map_chunked",
    "progress",
    "resolve_batch_size",
    "run_chunked",
    "set_memory_budget",
]

BatchSize = Union[int, str]

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
_memory_budget = DEFAULT_MEMORY_BUDGET
_CANDIDATES = (8, 16, 32, 64, 128, 256, 512)
_cache: dict[tuple[Any, ...], _Probe] = {}


def set_memory_budget(n_bytes: int) -> None:
    """Set the memory budget (bytes) that caps automatic chunk sizes; default 2 GiB."""
    global _memory_budget
    if n_bytes <= 0:
        raise OptionError(f"the memory budget must be positive, got {n_bytes}")
    _memory_budget = int(n_bytes)
    _cache.clear()


def get_memory_budget() -> int:
    """The memory budget in bytes that caps automatic chunk sizes."""
    return _memory_budget


def block_size(
    bytes_per_item: int, total: int, *, what: str, share: float = 0.25,
    batch_size: BatchSize = "auto",
) -> int:
    """Items per block of work whose own buffers take ``bytes_per_item`` each.

    A block's buffers (e.g. the noisy copies of an input and their values) take at most
    ``share`` of the memory budget, leaving the rest to the model evaluations, whose chunks are
    capped by the budget themselves. With an int ``batch_size`` a block larger than one chunk
    is a whole number of chunks. Raises :class:`~unveil.errors.OptionError` when a single item
    needs more than the whole budget (``what`` names the item in the message).
    """
    budget = _memory_budget
    if bytes_per_item > budget:
        raise OptionError(
            f"{what} needs about {_mib(bytes_per_item)} of memory, more than the memory budget "
            f"of {_mib(budget)}; raise the budget with unveil.set_memory_budget(n_bytes) (e.g. "
            f"unveil.set_memory_budget({2 * bytes_per_item})), or explain smaller inputs"
        )
    size = max(1, min(total, int(budget * share) // max(1, bytes_per_item)))
    if isinstance(batch_size, int) and size > batch_size and size < total:
        size -= size % batch_size
    return size


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


def progress(items: Iterable[Any], *, total: int, desc: str) -> Iterable[Any]:
    """``items`` with a progress bar when there are several (tqdm; silent when the output is
    not a terminal, or with ``TQDM_DISABLE=1`` in the environment)."""
    if total <= 1:
        return items
    from tqdm.auto import tqdm

    off = os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    return tqdm(items, total=total, desc=desc, disable=True if off else None, leave=False)


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in steps of ``size``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _bytes_per_row(module: nn.Module | None, run_one: Callable[[int, int], Any], grad: bool) -> int:
    """Bytes of intermediate outputs one row produces, from forward hooks on leaf modules."""
    if module is None:
        return 1 << 16
    total = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    leaves = [m for m in module.modules() if not list(m.children())]
    with forward_hooks([(m, hook) for m in leaves]):
        run_one(0, 1)
    # backward keeps activations and makes gradients of the same size
    return max(1, total * (3 if grad else 1))


@dataclass
class _Probe:
    """What is known about one workload: its memory cap and the measured rows per second."""

    cap: int
    rates: dict[int, float] = field(default_factory=dict)
    done: bool = False  # every useful size is measured, or throughput already fell
    timed: dict[int, int] = field(default_factory=dict)  # real chunks timed per size


def auto_batch_size(
    run: Callable[[int, int], Any],
    total: int,
    *,
    module: nn.Module | None = None,
    grad: bool = False,
    key: tuple[Any, ...] | None = None,
) -> int:
    """Choose a chunk size for ``total`` rows evaluated by ``run(start, stop)``, up front.

    (:func:`run_chunked` does not call this: it learns the size on the job's own chunks.)

    The chunk is capped by the memory budget; among the candidate sizes that fit, the one with
    the best rows per second in a timed probe wins (the probe's rows are computed and thrown
    away; each size is timed twice after a warm-up). One call spends at most as many probe rows
    as its job has, so a first, one-off call costs at most twice its work; the measurements are
    kept per ``key`` and later calls of the same kind time the sizes not measured yet, until
    throughput falls or every size that fits is known.
    """
    probe = _cache.get(key) if key is not None else None
    if probe is None:
        probe = _Probe(cap=max(1, _memory_budget // _bytes_per_row(module, run, grad)))
        if key is not None:
            _cache[key] = probe
    limit = min(probe.cap, total)
    if limit <= _CANDIDATES[0] or total <= 64:
        return limit  # a few rows: one chunk (or the cap); probing would cost more than it saves
    cands = [c for c in _CANDIDATES if c <= limit]
    budget = total
    for c in cands:
        if probe.done or 3 * c > budget:
            break
        if c in probe.rates:
            continue
        budget -= 3 * c
        run(0, c)  # warm-up: allocator and kernel selection
        best_t = math.inf
        for _ in range(2):  # the faster of two timings: one is often disturbed
            t0 = time.perf_counter()
            run(0, c)
            best_t = min(best_t, time.perf_counter() - t0)
        probe.rates[c] = c / max(best_t, 1e-9)
        probe.timed[c] = 2
        if probe.rates[c] < 0.8 * max(probe.rates.values()):
            probe.done = True  # past the peak
    if all(c in probe.rates for c in _CANDIDATES if c <= probe.cap):
        probe.done = True
    known = {c: r for c, r in probe.rates.items() if c <= limit}
    if not known:
        return min(limit, 64)  # too few rows to time even one size
    top = max(known.values())
    return min(c for c, r in known.items() if r * 1.03 >= top)  # a larger chunk must be clearly faster


class _Plan:
    """Chunk sizes for one job, learnt from the job's own chunks (no rows thrown away).

    While a workload's probe is not done, the job runs candidate sizes it has not measured yet,
    smallest first, two chunks each (the first at a new size pays for the allocator and kernel
    selection; the faster of the two counts), as long as a whole chunk of the size fits in the
    rows left. Measurements are kept in the workload's :class:`_Probe`, so later calls go on
    from where earlier ones stopped; exploring stops once a size is clearly slower than the
    best (past the peak) or every size that fits the memory cap is known. Otherwise chunks take
    the smallest measured size within 3% of the best throughput (a larger chunk must be clearly
    faster: it takes more memory), capped by the memory budget.
    """

    def __init__(self, probe: _Probe, total: int) -> None:
        self.probe = probe
        self.small = total <= 64  # a few rows: one chunk (or the cap), nothing to learn

    def _exploring(self, left: int) -> int | None:
        p = self.probe
        if p.done or self.small:
            return None
        for c in _CANDIDATES:
            if c > p.cap:
                break
            if p.timed.get(c, 0) < 2:
                return c if c <= left else None
        p.done = True  # every size that fits is measured
        return None

    def size(self, left: int) -> int:
        """The size of the next chunk when ``left`` rows are left."""
        p = self.probe
        limit = min(p.cap, left)
        if self.small or limit <= _CANDIDATES[0]:
            return max(1, limit)
        c = self._exploring(left)
        if c is not None:
            return c
        known = {c: r for c, r in p.rates.items() if p.timed.get(c, 0) >= 2 and c <= p.cap}
        if not known:
            return min(limit, 64)
        top = max(known.values())
        return min(min(c for c, r in known.items() if r * 1.03 >= top), limit)

    def record(self, rows: int, seconds: float) -> None:
        """Account a chunk of ``rows`` that took ``seconds`` (only candidate sizes count)."""
        p = self.probe
        if self.small or rows not in _CANDIDATES or rows > p.cap:
            return
        rate = rows / max(seconds, 1e-9)
        p.rates[rows] = max(rate, p.rates.get(rows, 0.0))
        p.timed[rows] = p.timed.get(rows, 0) + 1
        measured = [r for c, r in p.rates.items() if p.timed.get(c, 0) >= 2]
        if p.timed[rows] == 2 and p.rates[rows] < 0.8 * max(measured):
            p.done = True  # past the peak


def resolve_batch_size(batch_size: BatchSize) -> BatchSize:
    """Validate a ``batch_size`` option."""
    if batch_size == "auto":
        return batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
    return batch_size


def run_chunked(
    run: Callable[[int, int], Any],
    total: int,
    *,
    consume: Callable[[int, int, Any], torch.Tensor | None] | None = None,
    batch_size: BatchSize = "auto",
    model: Model | None = None,
    grad: bool = False,
    key: tuple[Any, ...] | None = None,
) -> torch.Tensor | None:
    """Concatenate ``run(start, stop)`` over ``range(total)`` in chunks along axis 0.

    ``run`` builds its own inputs for the rows it is given and must have no side effects: the
    automatic probe calls it on rows whose results are thrown away. Side effects (accumulating
    into a buffer) belong in ``consume(start, stop, result)``, called once per real chunk; what
    it returns (a tensor or ``None``) is what gets concatenated. ``key`` names the workload (e.g.
    the method and the per-row input shape) so the automatic choice is learnt once and cached.
    With ``batch_size="auto"`` the chunk sizes are chosen by timing the job's own chunks
    (:class:`_Plan`): no row is computed twice, so a first call costs its work and no more.
    On CUDA out-of-memory the chunk size halves and the chunk is retried.
    """
    resolve_batch_size(batch_size)
    if total <= 0:
        raise OptionError("nothing to evaluate: zero rows")
    plan: _Plan | None = None
    if batch_size == "auto":
        module = model.module if model is not None else None
        if key is not None:
            key = (id(module), grad, *key)
        seen = model.n_evals if model is not None else 0
        probe = _cache.get(key) if key is not None else None
        if probe is None:
            probe = _Probe(cap=max(1, _memory_budget // _bytes_per_row(module, run, grad)))
            if key is not None:
                _cache[key] = probe
        if model is not None:
            model.n_evals = seen  # the memory probe's row is not part of the method's cost
        plan = _Plan(probe, total)
        size = plan.size(total)
    else:
        size = min(int(batch_size), total)
    parts: list[torch.Tensor] = []
    start = 0
    while start < total:
        if plan is not None:
            size = plan.size(total - start)
        stop = min(start + size, total)
        try:
            t0 = time.perf_counter()
            res = run(start, stop)
            part = consume(start, stop, res) if consume is not None else res
            if plan is not None:
                plan.record(stop - start, time.perf_counter() - t0)
            if part is not None:
                parts.append(part)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            if plan is not None:
                plan.probe = _Probe(cap=size, done=True)  # this size is the most that fits
                if key is not None:
                    _cache[key] = plan.probe
            continue
        start = stop
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def n_chunks(total: int, size: int) -> int:
    """How many chunks of ``size`` cover ``total`` rows."""
    return math.ceil(total / size)


R = TypeVar("R")


def rows_located(run: Callable[[int, int], R], total: int) -> Callable[[int, int], R]:
    """``run`` whose :class:`~unveil.errors.NonFiniteOutputError` names rows of the whole range
    ``0..total`` rather than of the chunk ``a..b`` (for chunks of the explained rows)."""

    def located(a: int, b: int) -> R:
        try:
            return run(a, b)
        except NonFiniteOutputError as exc:
            raise exc.shifted(a, total) from exc

    return located


def map_chunked(run: Callable[[int, int], torch.Tensor], total: int, **options: Any) -> torch.Tensor:
    """:func:`run_chunked` for a pure ``run``: the concatenated per-chunk results.

    A :class:`~unveil.errors.NonFiniteOutputError` from a chunk is re-raised with the row
    numbers of the whole range (not of the chunk)."""
    out = run_chunked(rows_located(run, total), total, **options)
    assert out is not None
    return out
