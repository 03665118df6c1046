"""Chunked evaluation: results do not depend on the chunk size; OOM halves the chunk."""

from __future__ import annotations

import pytest
import torch

import unveil as uv
from _util import TinyCNN
from unveil.core import batching
from unveil.core.model import Model
from unveil.errors import OptionError


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_batch_size_invariance(method: str) -> None:
    net = TinyCNN().eval()
    x = torch.rand(9, 1, 16, 16)
    ref = uv.explain(net, x, method=method, batch_size=1)
    for bs in (7, "auto"):
        e = uv.explain(net, x, method=method, batch_size=bs)
        torch.testing.assert_close(torch.from_numpy(e.values), torch.from_numpy(ref.values))
        assert e.n_evals == ref.n_evals
    assert float(abs(ref.values).max()) > 0


def test_run_chunked_covers_all_rows_once() -> None:
    seen: list[tuple[int, int]] = []

    def consume(a: int, b: int, r: torch.Tensor) -> torch.Tensor:
        seen.append((a, b))
        return r

    out = batching.run_chunked(lambda a, b: torch.arange(a, b), 23, batch_size=5, consume=consume)
    assert out is not None and torch.equal(out, torch.arange(23))
    assert seen == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]


def test_auto_probe_has_no_side_effects_on_counts() -> None:
    net = TinyCNN().eval()
    m = Model(net)
    x = torch.rand(300, 1, 16, 16)
    with torch.inference_mode():
        batching.map_chunked(lambda a, b: m.forward(x[a:b]), 300, model=m, key=("t", 1))
    assert m.n_evals == 300


def test_memory_budget_caps_auto_chunk() -> None:
    net = TinyCNN().eval()
    x = torch.rand(400, 1, 16, 16)
    # bytes of every leaf module's output for one row, counted independently of the library
    leaf_bytes = 0
    with torch.inference_mode():
        h = x[:1]
        for m in net.features:
            h = m(h)
            leaf_bytes += h.numel() * 4
        p = net.pool(h)
        leaf_bytes += p.numel() * 4 * 2 + 4 * 4  # pool, flatten, linear
    budget = 40 * leaf_bytes
    sizes: list[int] = []
    old = batching.get_memory_budget()
    try:
        batching.set_memory_budget(budget)
        with torch.inference_mode():
            batching.run_chunked(lambda a, b: net(x[a:b]), 400, model=Model(net), key=("cap",),
                                 consume=lambda a, b, r: sizes.append(b - a))
    finally:
        batching.set_memory_budget(old)
    assert sum(sizes) == 400
    assert 1 <= max(sizes) <= 40


class _OOMAbove(torch.nn.Module):
    """Raises CUDA-style out-of-memory for chunks larger than ``limit`` rows."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("fake CUDA out of memory")
        return self.lin(x)


def test_out_of_memory_halves_the_chunk() -> None:
    net = _OOMAbove(limit=10).eval()
    x = torch.randn(50, 3)
    e = uv.explain(net, x, method="integrated_gradients", n_steps=8, batch_size=64, target=0)
    ref = uv.explain(torch.nn.Sequential(net.lin).eval(), x, method="integrated_gradients", n_steps=8, batch_size=8, target=0)
    torch.testing.assert_close(torch.from_numpy(e.values), torch.from_numpy(ref.values))


def test_bad_batch_size() -> None:
    with pytest.raises(OptionError, match="positive int or 'auto'"):
        batching.resolve_batch_size(0)
    with pytest.raises(OptionError, match="option batch_size=0 is outside >= 1"):  # declared
        uv.Saliency(TinyCNN(), batch_size=0)


def test_probe_spends_at_most_the_job_and_completes_over_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first, one-off call pays at most twice its work (job + probe); later calls of the same
    kind time the sizes not measured yet, within the same allowance, and then stop probing."""
    import types

    seen = {"rows": 0}
    clock = {"t": 0.0}
    # a fixed cost per call plus a cost per row: larger chunks are always faster
    monkeypatch.setattr(batching, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))

    def run(a: int, b: int) -> torch.Tensor:
        seen["rows"] += b - a
        clock["t"] += 1e-3 + 1e-6 * (b - a)
        return torch.zeros(b - a)

    def probe_rows(total: int) -> tuple[int, int]:
        before = seen["rows"]
        size = batching.auto_batch_size(run, total, key=key)
        return seen["rows"] - before, size

    key = ("probe-budget-test", 1)
    batching._cache.pop(key, None)
    spent, size = probe_rows(400)
    assert 0 < spent <= 400 and size == 64  # 8..64 timed; 128 would pass the allowance
    spent, size = probe_rows(400)
    assert 0 < spent <= 400 and size == 128  # the next size, in the next call
    assert probe_rows(400)[0] == 0  # 256 does not fit a 400-row call's allowance
    spent, size = probe_rows(40_000)
    assert spent > 0 and size == 512
    assert probe_rows(40_000) == (0, 512)  # every size measured: no more probing
    batching._cache.pop(key, None)


def test_auto_chunks_are_learnt_on_the_job_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_chunked`` times the job's own chunks: every row is computed once (none thrown away
    by a probe), new sizes are tried twice each, smallest first, and later calls of the same kind
    go on from there until the fastest size is known and used."""
    import types

    clock = {"t": 0.0}
    monkeypatch.setattr(batching, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))

    def run(a: int, b: int) -> torch.Tensor:
        clock["t"] += 1e-3 + 1e-6 * (b - a)  # larger chunks are always faster per row
        return torch.arange(a, b)

    def sizes(total: int) -> list[int]:
        seen: list[int] = []

        def consume(a: int, b: int, r: torch.Tensor) -> torch.Tensor:
            seen.append(b - a)
            return r

        out = batching.run_chunked(run, total, key=("learn-on-the-job",), consume=consume)
        assert out is not None and torch.equal(out, torch.arange(total))  # each row once
        return seen

    batching._cache.pop((id(None), False, "learn-on-the-job"), None)
    first = sizes(400)
    assert first[:8] == [8, 8, 16, 16, 32, 32, 64, 64] and sum(first) == 400
    assert sizes(400) == [128, 256, 16]  # 128 timed a second time, then the next size once
    big = sizes(40_000)
    assert big[0] == 256 and set(big[1:-1]) == {512}
    assert set(sizes(40_000)[:-1]) == {512}  # known: no more exploring
    assert sizes(50) == [50]  # a few rows: one chunk
    batching._cache.pop((id(None), False, "learn-on-the-job"), None)
