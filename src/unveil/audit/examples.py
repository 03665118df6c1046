"""A real audit: a small network predicting extramarital affairs on statsmodels' ``fair`` data.

The data (Fair, 1978, "A theory of extramarital affairs"; 6,366 women surveyed by Redbook in
1974) ships inside statsmodels, so nothing is downloaded. The target is ``affairs > 0``; the
sensitive attribute defaults to ``religious`` (1 = not, 4 = strongly), a protected ground in
most anti-discrimination law. Needs the ``examples`` extra (statsmodels) and the ``audit`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import require
from .bias import BiasAudit, bias_audit

__all__ = ["CREDIT_CLASSES", "FAIR_CLASSES", "RELIGIOUS", "FairExample", "credit_scorer",
           "fair_example", "load_fair", "synthetic_credit"]

#: What the values of ``religious`` mean (statsmodels' description of the data).
RELIGIOUS = {1: "not religious", 2: "mildly religious", 3: "fairly religious", 4: "strongly religious"}
#: The network's two classes (the target is ``affairs > 0``).
FAIR_CLASSES = ["no affairs", "affairs"]
#: :func:`credit_scorer`'s two classes.
CREDIT_CLASSES = ["rejected", "approved"]

FEATURES = ["rate_marriage", "age", "yrs_married", "children", "religious", "educ", "occupation",
            "occupation_husb"]


class TabularNet(nn.Module):
    """Standardise, mask (a column masked to 0 is ignored exactly), then a 2-layer MLP."""

    mean: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, mask: torch.Tensor, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(mean.numel(), hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((x - self.mean) / self.std * self.mask)
        return out


def load_fair() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The ``fair`` table: inputs (6366, 8), target ``affairs > 0`` (int64), column names."""
    fair: Any = require("statsmodels.datasets.fair", "examples")
    df = fair.load_pandas().data
    return df[FEATURES].to_numpy(np.float64), (df["affairs"].to_numpy() > 0).astype(np.int64), list(FEATURES)


def train_net(X: np.ndarray, y: np.ndarray, ignore: int | None, seed: int, epochs: int = 150) -> TabularNet:
    """Full-batch Adam on cross-entropy; a few seconds on a CPU."""
    xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    mask = torch.ones(X.shape[1])
    if ignore is not None:
        mask[ignore] = 0.0
    with torch.random.fork_rng():  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        net = TabularNet(xt.mean(0), xt.std(0).clamp_min(1e-6), mask)
        opt = torch.optim.Adam(net.parameters(), lr=2e-2, weight_decay=1e-4)
        for _ in range(epochs):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt), yt)
            loss.backward()  # type: ignore[no-untyped-call]  # torch's stub of Tensor.backward
            opt.step()
    net.eval()
    return net


@dataclass
class FairExample:
    """The trained network, its test rows and accuracy, and the audit."""

    audit: BiasAudit
    model: nn.Module
    accuracy: float
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]

    def summary(self) -> str:
        """The audit's summary with the model's test accuracy."""
        return f"network test accuracy {self.accuracy:.3f}\n{self.audit.summary()}"


def fair_example(
    *, sensitive: str = "religious", ignore_sensitive: bool = False, seed: int = 0, n_explain: int = 150,
    **options: Any,
) -> FairExample:
    """Train a small network on ``fair`` (75 % of rows) and audit it on the other 25 %.

    ``ignore_sensitive=True`` trains a network that cannot see the sensitive column (its input
    is masked to 0), for comparison. ``options`` go to :func:`bias_audit`.
    """
    from sklearn.model_selection import train_test_split

    X, y, names = load_fair()
    col = names.index(sensitive) if sensitive in names else None
    if col is None:
        from ..errors import OptionError

        raise OptionError(f"sensitive must be one of {names}, got {sensitive!r}")
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    net = train_net(Xtr, ytr, col if ignore_sensitive else None, seed)
    with torch.no_grad():
        acc = float((net(torch.tensor(Xte, dtype=torch.float32)).argmax(1).numpy() == yte).mean())
    known: dict[str, Any] = {"class_names": FAIR_CLASSES}
    if sensitive == "religious":
        known["group_names"] = RELIGIOUS
    audit = bias_audit(net, Xte, sensitive=sensitive, y=yte, feature_names=names, n_explain=n_explain,
                       seed=seed, **{**known, **options})
    return FairExample(audit, net, acc, Xte, yte, names)


CREDIT_FEATURES = ["income", "debt", "years_employed", "age", "gender", "zip_area"]


def synthetic_credit(n: int = 2000, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A credit-scoring table with a protected attribute, a proxy of it, and equal base rates.

    ``gender`` is 0/1 with probability 1/2; ``zip_area`` is a proxy (``1.5 * gender`` plus unit
    Gaussian noise); income, debt, years employed and age are standard Gaussians independent of
    gender. Repayment (the target) depends on income, debt and years employed only, so both
    groups have the same base rate in expectation.
    """
    rng = np.random.default_rng(seed)
    gender = rng.integers(0, 2, n).astype(np.float64)
    income, debt, years, age = rng.standard_normal((4, n))
    zip_area = 1.5 * gender + rng.standard_normal(n)
    y = (income - 0.8 * debt + 0.3 * years + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    X = np.stack([income, debt, years, age, gender, zip_area], axis=1)
    return X, y, list(CREDIT_FEATURES)


def credit_scorer(*, gender_weight: float = -1.0, zip_weight: float = -0.8) -> nn.Module:
    """A linear credit score on :func:`synthetic_credit`'s columns with two logits (reject,
    approve); the weights on ``gender`` and ``zip_area`` set how much it discriminates."""
    with torch.random.fork_rng():  # the weights are overwritten: leave the caller's RNG alone
        lin = nn.Linear(6, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[1] = torch.tensor([1.0, -0.8, 0.3, 0.0, gender_weight, zip_weight])
        if zip_weight != 0.0:  # keep the approval rate near 1/2 for group 0
            lin.bias[1] = -zip_weight * 0.75
    lin.eval()
    return lin
