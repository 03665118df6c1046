"""Architectures of the zoo models.

Both split into ``features`` and ``classifier`` (``nn.Sequential``), so layers have dotted names
such as ``"features.6"``. Every ReLU is its own, non-inplace module, as hook-based methods
(guided backprop, DeconvNet, LRP) need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BreastCancerMLP", "DigitsCNN", "Standardize"]


class DigitsCNN(nn.Module):
    """A small CNN for 1×32×32 digit images, 10 logits (about 34 k parameters).

    ``features``: ``0`` conv 1→16, ``1`` ReLU, ``2`` max-pool 2 (16×16), ``3`` conv 16→32,
    ``4`` ReLU, ``5`` max-pool 2 (8×8), ``6`` conv 32→64, ``7`` ReLU — the last convolution
    (``"features.6"``, 64×8×8) suits Grad-CAM. ``classifier``: ``0`` max-pool 2 (4×4),
    ``1`` flatten, ``2`` linear 1024→10.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, 1, 32, 32)`` to logits ``(N, 10)``."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


class Standardize(nn.BatchNorm1d):
    """``(x - mean) / std`` per column: a batch norm frozen to the training rows' statistics.

    ``mean`` and ``var`` are the running statistics (saved with the weights), used in training
    and evaluation alike, so a table model takes rows in the data's own units. Being a batch
    norm, it is folded into the next dense layer by LRP's canonizer.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__(n_features, eps=0.0, momentum=0.0, affine=False, track_running_stats=True)

    def fit(self, rows: torch.Tensor) -> Standardize:
        """Set the mean and the population variance from ``rows`` (a zero variance becomes 1)."""
        var = rows.var(dim=0, unbiased=False)
        assert self.running_mean is not None and self.running_var is not None
        with torch.no_grad():
            self.running_mean.copy_(rows.mean(dim=0))
            self.running_var.copy_(torch.where(var > 0, var, torch.ones_like(var)))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised columns (the stored statistics, never the batch's)."""
        return F.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps)


class BreastCancerMLP(nn.Module):
    """A 30-64-64-2 ReLU network on breast-cancer rows in their own units, 2 logits.

    ``standardize``: the training rows' mean and standard deviation, applied first (so rows
    go in as measured, e.g. a mean radius of 14.1); ``features``: ``0`` linear 30→64, ``1`` ReLU,
    ``2`` linear 64→64, ``3`` ReLU; ``classifier``: ``0`` linear 64→2 (classes
    ``["malignant", "benign"]``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.standardize = Standardize(30)
        self.features = nn.Sequential(
            nn.Linear(30, 64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map rows ``(N, 30)`` in their own units to logits ``(N, 2)``."""
        logits: torch.Tensor = self.classifier(self.features(self.standardize(x)))
        return logits
