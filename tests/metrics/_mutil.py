"""Models and data shared by the metric tests."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from unveil.core.explanation import Explanation


class SinglePixel(nn.Module):
    """Two logits ``(x[c, r, k], -x[c, r, k])``: the model reads one pixel and nothing else."""

    def __init__(self, r: int, k: int, c: int = 0) -> None:
        super().__init__()
        self.r, self.k, self.c = r, k, c
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, self.c, self.r, self.k] * self.scale
        return torch.stack([v, -v], 1)


def linear(n_in: int = 6, n_out: int = 3, seed: int = 0, image: tuple[int, int, int] | None = None) -> nn.Module:
    """A linear model (tables, or images flattened first) with seeded weights and biases."""
    torch.manual_seed(seed)
    if image is not None:
        c, h, w = image
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, n_out)).eval()
    return nn.Sequential(nn.Linear(n_in, n_out)).eval()


def make_exp(values: torch.Tensor | np.ndarray, x: torch.Tensor, targets: np.ndarray | None,
             method: str = "saliency", **kw: object) -> Explanation:
    return Explanation(values=np.asarray(values), inputs=x.numpy(), method=method,
                       targets=None if targets is None else np.asarray(targets), **kw)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The zoo digits CNN, its test images and labels."""
    from unveil.zoo import digits_cnn, load_dataset

    data = load_dataset("digits_cnn")
    return digits_cnn(), data.X_test, data.y_test


def paste(digits_x: torch.Tensor, canvas: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits (N, 1, 32, 32) pasted at seeded random positions into a zero canvas; returns the
    canvases (N, 1, canvas, canvas) and the boxes (N, 4) as (x0, y0, x1, y1)."""
    n, _, h, w = digits_x.shape
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, canvas - h + 1, (n,), generator=g)
    xs = torch.randint(0, canvas - w + 1, (n,), generator=g)
    out = torch.zeros(n, 1, canvas, canvas)
    for i in range(n):  # building test data, not evaluating a model
        out[i, :, ys[i]:ys[i] + h, xs[i]:xs[i] + w] = digits_x[i]
    return out, torch.stack([xs, ys, xs + w, ys + h], 1)


class Sliding(nn.Module):
    """Applies a 32x32 classifier to every window of a larger canvas (stride 8) and keeps, per
    class, the best window's logit: a digit anywhere on the canvas is recognised."""

    def __init__(self, net: nn.Module, size: int = 32, stride: int = 8) -> None:
        super().__init__()
        self.net, self.size, self.stride = net, size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        p = x.unfold(2, self.size, self.stride).unfold(3, self.size, self.stride)  # n c a b s s
        a, b = p.shape[2], p.shape[3]
        win = p.permute(0, 2, 3, 1, 4, 5).reshape(n * a * b, c, self.size, self.size)
        logits = self.net(win).view(n, a * b, -1)
        return logits.max(1).values
