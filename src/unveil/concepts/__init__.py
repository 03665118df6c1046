"""Concepts: what a direction, a channel or a feature of a layer means to the model.

- :func:`tcav` scores how much human concepts, each given as a set of examples, sway one class
  (Kim et al., 2018), with a test against random concepts; :func:`concept_activation_vectors`
  gives the CAVs to reuse on new inputs.
- :mod:`.crp` — concept relevance propagation (Achtibat et al. 2023): heat maps conditioned on
  channels, the most relevant concepts of a prediction and their reference examples.
- :mod:`.discovery` — concept discovery (CRAFT, Fel et al. 2023): non-negative factorisation (or
  a sparse autoencoder) of a layer's activations, top patches, and Sobol importance per concept.
"""

from __future__ import annotations

from .crp import (
    ConceptReferences,
    ConceptRelevance,
    concept_references,
    conditional_relevance,
    load_concept_relevance,
    top_concepts,
)
from .discovery import ConceptDiscovery, discover_concepts, load_concept_discovery
from .result import TCAVResult
from .tcav import CAV, concept_activation_vectors, tcav

__all__ = [
    "CAV",
    "ConceptDiscovery",
    "ConceptReferences",
    "ConceptRelevance",
    "TCAVResult",
    "concept_activation_vectors",
    "concept_references",
    "conditional_relevance",
    "discover_concepts",
    "load_concept_discovery",
    "load_concept_relevance",
    "tcav",
    "top_concepts",
]
