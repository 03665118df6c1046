"""The dashboard's heavy work (explanations, sanity checks, surrogates, audits) runs in a pool of
worker threads, off the event loop, each request within a time budget.

Threads suit the work: torch releases the GIL in its kernels, and unveil's methods may explain
one torch model from several threads at once (hooks act on their own thread's passes, the
model's flags are saved by the first guard and restored by the last). A request whose budget runs
out gets a 503 at once; its job is stopped at the next forward pass of the model (a pre-hook on
the torch module, copied into the copies methods make, raises :class:`Stopped` in that job's
thread only), so the worker and the model are free again soon after. Models that are not torch
modules (any callable) get no such promise of thread-safety: their jobs run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from torch import nn

from ._state import ApiError

__all__ = ["DEFAULT_TIME_BUDGET", "DEFAULT_WORKERS", "Job", "Stopped", "Work", "check"]

T = TypeVar("T")
#: Seconds a heavy request may take, waiting for a worker included.
DEFAULT_TIME_BUDGET = 120.0
#: Worker threads for heavy requests.
DEFAULT_WORKERS = 4


class Stopped(BaseException):
    """Raised inside a job whose time ran out. A ``BaseException``, so that code recording a
    method's failure (``except Exception``) does not swallow it; ``finally`` blocks still run."""


class Job:
    """One heavy request: its deadline (``time.monotonic()``) and whether it was stopped."""

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget
        self.stopped = threading.Event()

    def left(self) -> float:
        """Seconds until the deadline (0 once past it)."""
        return max(0.0, self.deadline - time.monotonic())

    def over(self) -> bool:
        """Whether the job was stopped or its deadline passed."""
        return self.stopped.is_set() or time.monotonic() > self.deadline


_JOBS: dict[int, Job] = {}  # thread id -> the job that thread runs


def check() -> None:
    """Raise :class:`Stopped` when the calling thread runs a job that is over (a no-op in any
    other thread)."""
    job = _JOBS.get(threading.get_ident())
    if job is not None and job.over():
        raise Stopped


def _pre_hook(_module: nn.Module, _args: Any) -> None:
    # A plain function (copies of the module share it); it acts on the calling thread's job.
    check()


class Work:
    """A pool of worker threads with a time budget per request."""

    def __init__(self, *, workers: int = DEFAULT_WORKERS, time_budget: float = DEFAULT_TIME_BUDGET
                 ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not time_budget > 0:
            raise ValueError(f"time_budget must be a positive number of seconds, got {time_budget}")
        self.workers = workers
        self.time_budget = float(time_budget)
        self._pool: ThreadPoolExecutor | None = None  # made on first use, again after shutdown
        self._pool_lock = threading.Lock()
        self._jobs: set[Job] = set()  # this pool's jobs not yet finished
        self._serial: dict[str, threading.Lock] = {}
        self._serial_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                                thread_name_prefix="unveil-work")
            return self._pool

    def shutdown(self) -> None:
        """Stop the pool's jobs (at their next forward pass) and let its threads end; a later
        request starts a new pool."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            for job in list(self._jobs):
                job.stopped.set()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[[], T], *, what: str, advice: str = "") -> T:
        """``fn()`` on a worker thread within the time budget; a 503 saying so when it runs out
        (``advice`` tells what to do instead)."""
        job = Job(self.time_budget)
        cf: Future[T] = self._executor().submit(self._call, job, fn)
        self._jobs.add(job)
        cf.add_done_callback(lambda _f: self._jobs.discard(job))
        fut = asyncio.wrap_future(cf)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.time_budget)
        except (TimeoutError, Stopped):
            job.stopped.set()
            cf.cancel()
            tip = f" {advice}" if advice else ""
            raise ApiError(503, f"{what} did not finish within the dashboard's budget of "
                                f"{self.time_budget:g} s per request (waiting for other requests "
                                f"included) and was stopped.{tip} For a larger budget start the "
                                "dashboard with unveil serve --time-budget SECONDS") from None
        except BaseException:
            job.stopped.set()  # the client left or the server stops: stop the work too
            cf.cancel()
            raise

    @staticmethod
    def _call(job: Job, fn: Callable[[], T]) -> T:
        if job.over():
            raise Stopped  # waited for a worker past its budget
        me = threading.get_ident()
        _JOBS[me] = job
        try:
            return fn()
        finally:
            del _JOBS[me]

    @contextlib.contextmanager
    def hold(self, key: str, model: Any) -> Iterator[None]:
        """Inside a job: watch ``model`` for the job's deadline when it is a torch module (or
        wraps one); otherwise hold ``key``'s lock, so that such models run one job at a time."""
        module = model if isinstance(model, nn.Module) else getattr(model, "module", None)
        if isinstance(module, nn.Module):
            handle = module.register_forward_pre_hook(_pre_hook)
            try:
                yield
            finally:
                handle.remove()
            return
        with self._serial_lock:
            lock = self._serial.setdefault(key, threading.Lock())
        job = _JOBS.get(threading.get_ident())
        if not lock.acquire(timeout=job.left() if job is not None else -1):
            raise Stopped
        try:
            yield
        finally:
            lock.release()
