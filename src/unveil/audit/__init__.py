"""Audits of a model's behaviour: :func:`bias_audit` checks a classifier for reliance on a
sensitive attribute (group metrics through fairlearn, attribution shares of the attribute and
its proxies, counterfactual flips) and states a verdict with the figures behind it.

Needs the ``audit`` extra (fairlearn, pandas); the real example in :mod:`unveil.audit.examples`
also needs ``examples`` (statsmodels).
"""

from __future__ import annotations

from ._proxies import ProxyInfo
from .bias import AuditThresholds, BiasAudit, Flag, bias_audit

__all__ = ["AuditThresholds", "BiasAudit", "Flag", "ProxyInfo", "bias_audit"]
