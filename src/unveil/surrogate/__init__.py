"""Interpretable stand-ins and global explanations of a black box on tables.

- :func:`distill` fits a global surrogate (decision tree, rule list, sparse linear model) to the
  black box's answers and measures its fidelity on held-out rows; :func:`fidelity_curve` does
  so for growing sizes; :func:`local_surrogate` fits one around a single instance.
- :func:`permutation_importance`, :func:`partial_dependence` (with ICE curves) and
  :func:`shapley_importance` describe the black box itself.
- :func:`hybrid` / :class:`HybridModel` answer with faithful rules and defer to the network
  elsewhere.
"""

from __future__ import annotations

from ._rules import Condition, Rule, RuleList
from .distill import FidelityCurve, Surrogate, distill, fidelity_curve
from .global_importance import (
    GlobalImportance,
    PartialDependence,
    partial_dependence,
    permutation_importance,
    shapley_importance,
)
from .hybrid import HybridModel, HybridReport, hybrid
from .local import LocalSurrogate, local_surrogate

__all__ = [
    "Condition",
    "FidelityCurve",
    "GlobalImportance",
    "HybridModel",
    "HybridReport",
    "LocalSurrogate",
    "PartialDependence",
    "Rule",
    "RuleList",
    "Surrogate",
    "distill",
    "fidelity_curve",
    "hybrid",
    "local_surrogate",
    "partial_dependence",
    "permutation_importance",
    "shapley_importance",
]
