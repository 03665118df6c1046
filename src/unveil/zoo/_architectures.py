"""Architectures of the zoo models.

Both split into ``features`` and ``classifier`` (``nn.Sequential``), so layers have dotted names
such as ``"features.6"``. Every ReLU is its own, non-inplace module, as hook-based methods
(guided backprop, DeconvNet, LRP) need.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BreastCancerMLP", "DigitsCNN"]


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


class BreastCancerMLP(nn.Module):
    """A 30-64-64-2 ReLU network on standardised breast-cancer features, 2 logits.

    ``features``: ``0`` linear 30→64, ``1`` ReLU, ``2`` linear 64→64, ``3`` ReLU;
    ``classifier``: ``0`` linear 64→2 (classes ``["malignant", "benign"]``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(30, 64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map rows ``(N, 30)`` to logits ``(N, 2)``."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits
