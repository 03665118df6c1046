"""Sampling methods stay within the memory budget whatever the number of samples (issue 16).

Peak memory is measured in a fresh subprocess per case: the rise of the RSS high-water mark
(``VmHWM`` in ``/proc/self/status``) over the RSS after imports and a warm-up, with glibc told to
return freed blocks at once so that RSS tracks the live working set. Draws come from
counter-based streams, so results do not depend on the batch size or the memory budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import unveil
from _util import TinyCNN
from unveil.attribution.gradient_shap import GradientShap, gradient_shap_draws
from unveil.attribution.smooth import SmoothGrad, VarGrad, normal_draws
from unveil.core import batching, draws
from unveil.errors import ModelError, OptionError

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")

SRC = str(Path(unveil.__file__).resolve().parents[1])
LINUX = sys.platform.startswith("linux") and Path("/proc/self/clear_refs").exists()


@pytest.fixture
def budget() -> Iterator[Any]:
    """Set the memory budget for one test (restored after)."""
    old = batching.get_memory_budget()
    yield batching.set_memory_budget
    batching.set_memory_budget(old)


# ---------------------------------------------------------------------------- draws
def test_streams_do_not_depend_on_the_chunking() -> None:
    whole = draws.normal(3, 0, 140_003)
    for size in (7_001, 65_536, 70_001):
        parts = [draws.normal(3, a, min(a + size, 140_003)) for a in range(0, 140_003, size)]
        assert torch.equal(torch.cat(parts), whole)
    ones = [draws.normal(3, a, a + 1) for a in range(65_500, 65_600)]  # across a piece's end
    assert torch.equal(torch.cat(ones), whole[65_500:65_600])
    assert torch.equal(draws.normal(3, 65_530, 65_540), whole[65_530:65_540])
    assert not torch.equal(draws.normal(4, 0, 100), whole[:100])  # another seed
    assert not torch.equal(draws.normal(3, 0, 100, stream=1), whole[:100])  # another stream
    assert abs(float(whole.mean())) < 0.01 and abs(float(whole.std()) - 1) < 0.01
    u = draws.uniform(3, 0, 50_000, piece=1024)
    assert torch.equal(torch.cat([draws.uniform(3, a, a + 500, piece=1024)
                                  for a in range(0, 50_000, 500)]), u)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    k = draws.integers(3, 0, 60_000, 6, piece=1024)
    assert torch.equal(k.bincount(minlength=6).clamp(max=1), torch.ones(6, dtype=torch.long))
    assert torch.equal(draws.integers(3, 123, 4567, 6, piece=1024), k[123:4567])


# ---------------------------------------------------------------------------- batch invariance
@pytest.mark.parametrize("cls", [SmoothGrad, VarGrad])
def test_same_seed_same_answer_for_any_batch_size_and_budget(cls: Any, budget: Any) -> None:
    net = TinyCNN().eval()
    x = torch.rand(3, 1, 16, 16)
    want = cls(net, n_samples=12, noise_level=0.2)(x, target=1, seed=5)
    assert float(np.abs(want.values).max()) > 1e-6
    for bs in (1, 7, 64, "auto"):
        got = cls(net, n_samples=12, noise_level=0.2, batch_size=bs)(x, target=1, seed=5)
        torch.testing.assert_close(torch.from_numpy(got.values), torch.from_numpy(want.values))
        if got.stderr is not None:
            torch.testing.assert_close(torch.from_numpy(got.stderr),
                                       torch.from_numpy(want.stderr))
    # a budget that allows 5 noisy copies per block: rows split across blocks
    per_pair = 16 * 16 * (6 * 4 + 16)
    budget(20 * per_pair)
    for bs in (1, 7, "auto"):
        got = cls(net, n_samples=12, noise_level=0.2, batch_size=bs)(x, target=1, seed=5)
        torch.testing.assert_close(torch.from_numpy(got.values), torch.from_numpy(want.values))


def test_blocks_give_the_noise_of_the_whole_draw(budget: Any) -> None:
    """Blocked SmoothGrad equals the mean over the noise drawn at once (the stream's layout)."""
    net = TinyCNN().eval()
    x = torch.rand(2, 1, 16, 16)
    s, sd = 6, 0.3
    budget(4 * 16 * 16 * (6 * 4 + 16))  # one noisy copy per block
    e = SmoothGrad(net, n_samples=s, stdev=sd, inner_options={"abs": False})(x, target=0, seed=9)
    eps = normal_draws((2 * s, 1, 16, 16), 9, dtype=x.dtype, device=x.device)
    xs = (x.repeat_interleave(s, 0) + sd * eps).requires_grad_(True)
    (g,) = torch.autograd.grad(net(xs)[:, 0].sum(), xs)
    torch.testing.assert_close(torch.from_numpy(e.values), g.view(2, s, 1, 16, 16).mean(1))


@pytest.mark.parametrize("per_block", [1, 5, 30, None])
def test_moments_of_any_blocking_equal_the_whole_draw(per_block: int | None, budget: Any) -> None:
    """Blocks of one copy, part of a row (5 of 12), two whole rows (30 copies fit: 24 taken) or
    everything: SmoothGrad's mean and standard error and VarGrad's population variance equal
    those computed from all noisy gradients at once (same stream)."""
    net = TinyCNN().eval()
    x = torch.rand(3, 1, 16, 16)
    s, sd = 12, 0.3
    if per_block is not None:
        budget(4 * per_block * 16 * 16 * (6 * 4 + 16))
    eps = normal_draws((3 * s, 1, 16, 16), 4, dtype=x.dtype, device=x.device)
    xs = (x.repeat_interleave(s, 0) + sd * eps).requires_grad_(True)
    (g,) = torch.autograd.grad(net(xs)[:, 1].sum(), xs)
    g = g.double().view(3, s, 1, 16, 16)
    sg = SmoothGrad(net, n_samples=s, stdev=sd, inner_options={"abs": False})(x, target=1, seed=4)
    vg = VarGrad(net, n_samples=s, stdev=sd, inner_options={"abs": False})(x, target=1, seed=4)
    torch.testing.assert_close(torch.from_numpy(sg.values), g.mean(1).float())
    assert sg.stderr is not None
    torch.testing.assert_close(torch.from_numpy(sg.stderr), (g.std(1) / s**0.5).float())
    torch.testing.assert_close(torch.from_numpy(vg.values), g.var(1, correction=0).float())


def test_gradient_shap_chunks_read_the_same_draws() -> None:
    net = TinyCNN().eval()
    x, bg = torch.rand(2, 1, 16, 16), torch.rand(5, 1, 16, 16)
    idx, alpha, eps = gradient_shap_draws(2, 9, 5, 3, point_shape=(1, 16, 16), noise=True,
                                          dtype=x.dtype, device=x.device)
    part = gradient_shap_draws(2, 9, 5, 3, point_shape=(1, 16, 16), noise=True, dtype=x.dtype,
                               device=x.device, start=4, stop=11)
    assert eps is not None and part[2] is not None
    assert torch.equal(part[0], idx[4:11]) and torch.equal(part[1], alpha[4:11])
    assert torch.equal(part[2], eps[4:11])
    want = GradientShap(net, n_samples=9, stdev=0.1)(x, background=bg, target=1, seed=3)
    for bs in (1, 7, 64):
        got = GradientShap(net, n_samples=9, stdev=0.1, batch_size=bs)(x, background=bg,
                                                                         target=1, seed=3)
        torch.testing.assert_close(torch.from_numpy(got.values), torch.from_numpy(want.values))


# ---------------------------------------------------------------------------- refusal, streaming
def test_refuses_only_when_one_noisy_copy_exceeds_the_budget(budget: Any) -> None:
    net = TinyCNN().eval()
    x = torch.rand(1, 1, 16, 16)
    budget(16 * 16 * (6 * 4 + 16))  # exactly one noisy copy's buffers: runs, one per block
    e = SmoothGrad(net, n_samples=3)(x, target=0, seed=0)
    assert np.isfinite(e.values).all()
    budget(16 * 16 * 8)
    with pytest.raises(OptionError, match=r"smoothgrad: one noisy copy of a row needs about "
                       r"0\.0 MiB of memory, more than the memory budget of 0\.0 MiB; raise the "
                       r"budget with unveil.set_memory_budget\(n_bytes\)"):
        SmoothGrad(net, n_samples=3)(x, target=0, seed=0)


class _Stop(Exception):
    pass


class _StopAfter(torch.nn.Module):
    """A linear model that records the rows of each call and raises on call ``k``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 2)
        self.k = k
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(int(x.shape[0]))
        if len(self.rows) >= self.k:
            raise _Stop
        out: torch.Tensor = self.lin(x)
        return out


def test_huge_n_samples_streams_in_bounded_blocks(budget: Any) -> None:
    """n_samples=10**7 starts evaluating at once, in calls no larger than a block."""
    budget(2**20)
    per_pair = 8 * (6 * 4 + 16)
    block = int(2**20 * 0.25) // per_pair
    net = _StopAfter(k=40)
    with pytest.raises(ModelError, match="the model raised _Stop"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SmoothGrad(net, n_samples=10**7)(torch.randn(2, 8), target=0, seed=0)
    assert len(net.rows) == 40 and 1 < max(net.rows[1:]) <= block  # the first call: the scores


_PEAK = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
import unveil as uv
from unveil.attribution.path import IntegratedGradients
from unveil.attribution.smooth import SmoothGrad, VarGrad
case, budget = sys.argv[1], int(sys.argv[2])
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
torch.manual_seed(0)
if case == "stream":
    net = torch.nn.Linear(8, 2).eval()
    x = torch.randn(2, 8)
else:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(2, 3),
    ).eval()
    x = torch.rand(8, 3, 224, 224)
uv.set_memory_budget(budget)
SmoothGrad(net, n_samples=2)(x[:1], target=0, seed=0)  # warm-up: imports, allocator
calls = [0]
if case == "stream":  # stop a call of n_samples=10**7 after 30 model calls
    def stop(*_):
        calls[0] += 1
        if calls[0] >= 30:
            raise KeyboardInterrupt
    net.register_forward_pre_hook(stop)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark
base = status("VmRSS")
try:
    if case == "ig":
        IntegratedGradients(net, n_steps=256)(x, target=0)
    elif case == "smoothgrad":
        SmoothGrad(net, n_samples=256, stdev=0.1)(x, target=0, seed=0)
    elif case == "vargrad":
        VarGrad(net, n_samples=256, stdev=0.1)(x, target=0, seed=0)
    else:
        SmoothGrad(net, n_samples=10**7)(x, target=0, seed=0)
except KeyboardInterrupt:
    pass
print(json.dumps({"rise": status("VmHWM") - base, "calls": calls[0]}))
"""


def peak_rise(case: str, budget: int) -> dict[str, int]:
    """Peak RSS rise (bytes) of ``case`` in a fresh process, with ``budget``."""
    env = {**os.environ, "PYTHONPATH": SRC, "MALLOC_MMAP_THRESHOLD_": "131072",
           "MALLOC_TRIM_THRESHOLD_": "131072", "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-c", _PEAK, case, str(budget)], capture_output=True,
                         text=True, env=env, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(not LINUX, reason="needs /proc/self/status and clear_refs (Linux)")
def test_noise_tunnels_peak_within_twice_integrated_gradients() -> None:
    """8x3x224x224, 256 samples (SmoothGrad, VarGrad) or steps (IG), the same 256 MiB budget.

    Drawing every noisy copy up front took ~5 GB (2048 copies of 0.6 MB, their values and the
    inner method's copies); in blocks the noise tunnels rise ~60 MiB here, IG ~540 MiB (its
    chunk of path points is capped by the activations' estimate, not the inputs' copies).
    """
    budget = 256 * 2**20
    ig = peak_rise("ig", budget)["rise"]
    for case in ("smoothgrad", "vargrad"):
        rise = peak_rise(case, budget)["rise"]
        assert rise <= 2 * max(ig, 32 * 2**20), (case, rise / 2**20, ig / 2**20)


@pytest.mark.skipif(not LINUX, reason="needs /proc/self/status and clear_refs (Linux)")
def test_huge_n_samples_peak_stays_small() -> None:
    """n_samples=10**7 of a 2x8 input: all noise at once would be 640 MB; streaming stays near
    a 16 MiB budget's blocks."""
    res = peak_rise("stream", 16 * 2**20)
    assert res["calls"] == 30
    assert res["rise"] < 64 * 2**20, res["rise"] / 2**20


def test_rise_draws_its_masks_per_chunk() -> None:
    from unveil.attribution.perturbation import RISE as Rise

    net = TinyCNN().eval()
    x = torch.rand(2, 1, 16, 16)
    want = Rise(net, n_samples=40, grid=4)(x, target=1, seed=2)
    assert float(np.abs(want.values).max()) > 1e-6
    for bs in (1, 7, 64):
        got = Rise(net, n_samples=40, grid=4, batch_size=bs)(x, target=1, seed=2)
        torch.testing.assert_close(torch.from_numpy(got.values), torch.from_numpy(want.values))
