"""Small problems shared by the data-attribution tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def logistic_problem(n: int = 40, d: int = 3, classes: int = 3, seed: int = 0, n_test: int = 4
                     ) -> tuple[nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float64 multinomial logistic regression (untrained) and separable-ish data."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n_test, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, classes, generator=g, dtype=torch.float64)
    logits = x @ w + 0.8 * torch.randn(n + n_test, classes, generator=g, dtype=torch.float64)
    y = logits.argmax(1)
    torch.manual_seed(seed)
    model = nn.Linear(d, classes).double().eval()
    return model, x[:n], y[:n], x[n:], y[n:]


def digits(n_train: int = 500, n_test: int = 20, seed: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits (bundled, offline), standardised, float64, split at random."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    xt, yt = torch.tensor(x), torch.tensor(y)
    return xt[tr], yt[tr], xt[te], yt[te]
