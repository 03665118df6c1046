"""Concepts: what a direction at a layer means to the model.

:func:`tcav` scores how much human concepts, each given as a set of examples, sway one class
(Kim et al., 2018), with a test against random concepts; :func:`concept_activation_vectors`
gives the CAVs to reuse on new inputs.
"""

from __future__ import annotations

from .result import TCAVResult
from .tcav import CAV, concept_activation_vectors, tcav

__all__ = ["CAV", "TCAVResult", "concept_activation_vectors", "tcav"]
