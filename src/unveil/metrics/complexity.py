"""Complexity: how concentrated is an explanation?

- :func:`sparseness`: the Gini index of ``|values|`` (Chalasani et al., 2020, "Concise
  Explanations of Neural Networks using Adversarial Training", ICML): 0 when every feature gets
  the same share, towards 1 when one feature holds everything.
- :func:`effective_support`: ``exp(H(p)) / D`` for the shares ``p = |values| / sum |values|``
  (the entropy ``H`` is Bhatt et al.'s 2020 complexity): the fraction of the ``D`` features the
  explanation effectively uses, in (0, 1].

Image maps are summed over channels (in absolute value) first. The model is not needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.explanation import Explanation
from ._common import MetricResult, element_values, nanmean

__all__ = ["effective_support", "sparseness"]


def _shares(exp: Explanation) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(exp.inputs))
    v = element_values(exp, x).double().abs()
    if v.ndim == 4:
        v = v.sum(1)
    return v.reshape(v.shape[0], -1)


def sparseness(model: Any, exp: Explanation) -> MetricResult:
    """Gini index of ``|values|`` per sample (Chalasani et al., 2020); NaN for an all-zero map.

    ``G = sum_k (2k - D - 1) a_(k) / (D sum_k a_(k))`` with ``a_(k)`` sorted ascending.
    Higher means sparser.
    """
    a = _shares(exp).sort(1).values
    d = a.shape[1]
    k = torch.arange(1, d + 1, dtype=torch.float64)
    total = a.sum(1)
    g = ((2 * k - d - 1) * a).sum(1) / (d * total)
    g = torch.where(total > 0, g, torch.full_like(g, float("nan")))
    return MetricResult("sparseness", nanmean(g), g.numpy(), None)


def effective_support(model: Any, exp: Explanation) -> MetricResult:
    """``exp(entropy of |values| / sum |values|) / D`` per sample: the share of features the
    explanation effectively spreads over (1 for a flat map, 1/D for a single feature); NaN for
    an all-zero map. ``details["entropy"]`` holds the entropies (Bhatt et al., 2020)."""
    a = _shares(exp)
    total = a.sum(1, keepdim=True)
    p = a / total.clamp(min=1e-300)
    h = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(1)
    s = torch.exp(h) / a.shape[1]
    bad = total.squeeze(1) <= 0
    s = torch.where(bad, torch.full_like(s, float("nan")), s)
    h = torch.where(bad, torch.full_like(h, float("nan")), h)
    return MetricResult("effective_support", nanmean(s), s.numpy(), None,
                        details={"entropy": h.numpy()})
