"""Shared pieces of the benchmarks: workloads, timing, floors, rows, reference-library setup.

Workloads follow DESIGN.md: W1 a ResNet-like CNN on smooth random 3x64x64 images (batch 8), W2
an MLP 30-64-64-1 on standardised breast-cancer data (16 rows explained, 100 background rows),
W3 the digits zoo CNN (batch 16). Every workload is seeded and in eval mode.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "stubs"


def use_torchvision_stub() -> None:
    """Make the repo's torchvision stand-in importable (benchmark processes only)."""
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))


def drop_torchvision_stub() -> None:
    """Undo :func:`use_torchvision_stub` before importing transformers, which takes any importable
    ``torchvision`` for the real one and imports names the stand-in does not have."""
    while str(STUBS) in sys.path:
        sys.path.remove(str(STUBS))
    for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[name]


# ---------------------------------------------------------------------------- workloads
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.short(x))


class ResNetLike(nn.Module):
    """W1: stem + 4 residual stages (32/64/128/256), BN+ReLU, global pool, 10 classes."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = _Block(32, 32, 1)
        self.layer2 = _Block(32, 64, 2)
        self.layer3 = _Block(64, 128, 2)
        self.layer4 = _Block(128, 256, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(256, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.pool(x)))


def smooth_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images: low-resolution noise upsampled bilinearly."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, max(4, size // 8), max(4, size // 8), generator=g)
    return nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def w1(batch: int = 8, size: int = 64, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The ResNet-like CNN with randomised BN affine parameters and calibrated statistics."""
    torch.manual_seed(seed)
    model = ResNetLike()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():  # calibrate running statistics on the input distribution
        for k in range(4):
            model(smooth_images(32, size, seed=1000 + k))
    model.eval()
    return model, smooth_images(batch, size, seed=seed)


@dataclass
class MLPWorkload:
    model: nn.Module
    x: torch.Tensor  # 16 explained rows
    background: torch.Tensor  # 100 training rows
    x_train: torch.Tensor
    feature_names: list[str]


def w2(seed: int = 0) -> MLPWorkload:
    """An MLP 30-64-64-1 trained on standardised breast-cancer data (one logit)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    xtr, xte, ytr, _ = train_test_split(data.data, data.target, test_size=0.25, random_state=0, stratify=data.target)
    sc = StandardScaler().fit(xtr)
    xtr_t = torch.tensor(sc.transform(xtr), dtype=torch.float32)
    xte_t = torch.tensor(sc.transform(xte), dtype=torch.float32)
    y = torch.tensor(ytr, dtype=torch.float32)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1), nn.Flatten(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(xtr_t), y)
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    bg = xtr_t[torch.randperm(len(xtr_t), generator=g)[:100]]
    return MLPWorkload(model, xte_t[:16], bg, xtr_t, list(data.feature_names))


def w3(batch: int = 16) -> tuple[nn.Module, torch.Tensor]:
    """The digits zoo CNN and its first test images."""
    from unveil.zoo import digits_cnn, load_dataset

    data = load_dataset("digits_cnn")
    return digits_cnn(), data.X_test[:batch]


# ---------------------------------------------------------------------------- timing
def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _fwd(model: nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


def _fwd_bwd(model: nn.Module, x: torch.Tensor) -> None:
    xi = x.detach().requires_grad_(True)
    out = model(xi)
    out = out if out.ndim == 1 else out[:, 0]
    torch.autograd.grad(out.sum(), xi)


def best_batch(model: nn.Module, sample: torch.Tensor, *, grad: bool, quick: bool = False,
               budget_bytes: int = 2 * 1024**3) -> tuple[int, float]:
    """The batch size (1..512) with the best seconds per row of a plain forward (or
    forward+backward w.r.t. the input), and that time per row.

    Stops at the batch size whose inputs alone would pass the memory budget / 8 (activations
    take several times the input).
    """
    best, best_bs = float("inf"), 1
    row_bytes = sample[0].numel() * sample.element_size()
    sizes = [1, 8, 32, 64, 128] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    fn = _fwd_bwd if grad else _fwd
    for bs in sizes:
        if bs * row_bytes * 64 > budget_bytes:
            break
        reps = sample[:1].expand(bs, *sample.shape[1:]).contiguous()
        t = median_time(lambda r=reps: fn(model, r), repeats=2 if quick else 3)
        if t / bs < best:
            best, best_bs = t / bs, bs
    return best_bs, best


def per_row_floor(model: nn.Module, sample: torch.Tensor, *, grad: bool, quick: bool = False,
                  budget_bytes: int = 2 * 1024**3) -> float:
    """Best seconds per row over batch sizes 1..512 (forward, or forward+backward w.r.t. input)."""
    return best_batch(model, sample, grad=grad, quick=quick, budget_bytes=budget_bytes)[1]


def floor_run(model: nn.Module, sample: torch.Tensor, rows: int, batch: int, *,
              grad: bool) -> Callable[[], None]:
    """The floor of a method that evaluates ``rows`` model rows, as a function to time beside
    it: plain torch forward (or forward+backward w.r.t. the input) over ``rows`` rows, ``batch``
    at a time (the best batch size of :func:`best_batch`)."""
    fn = _fwd_bwd if grad else _fwd
    full = sample[:1].expand(min(batch, rows), *sample.shape[1:]).contiguous()

    def go() -> None:
        for _ in range(rows // full.shape[0]):
            fn(model, full)
        if rows % full.shape[0]:
            fn(model, full[: rows % full.shape[0]])

    return go


def alternate(fns: list[Callable[[], Any]], *, repeats: int, warmup: int = 1) -> list[float]:
    """Median seconds of each of ``fns`` timed in turns, fair under a changing machine load:
    each round runs every function once, starting one further along than the round before."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for k in range(repeats):
        for i in range(len(fns)):
            j = (i + k) % len(fns)
            gc.collect()
            t0 = time.perf_counter()
            fns[j]()
            times[j].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def plain_time(model: nn.Module, x: torch.Tensor, *, grad: bool, repeats: int = 5) -> float:
    """Plain torch forward (or forward+backward w.r.t. the input) on ``x`` as one batch."""
    fn = _fwd_bwd if grad else _fwd
    return median_time(lambda: fn(model, x), repeats=repeats)


# ---------------------------------------------------------------------------- results
@dataclass
class Row:
    """One line of the benchmark table."""

    group: str
    method: str
    workload: str
    unveil_s: float
    ref_name: str = ""
    ref_s: float | None = None
    n_evals: int | None = None
    floor_s: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if self.ref_s is None else self.unveil_s / self.ref_s

    @property
    def over_floor(self) -> float | None:
        return None if self.floor_s is None else self.unveil_s / self.floor_s


@dataclass
class Context:
    """What a benchmark module gets: the quick flag and shared caches."""

    quick: bool = False
    cache: dict[str, Any] = field(default_factory=dict)

    def repeats(self, full: int = 5) -> int:
        return 1 if self.quick else full


def load_info() -> str:
    try:
        la = os.getloadavg()
        return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores"
    except OSError:  # pragma: no cover
        return "load average unknown"
