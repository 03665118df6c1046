"""Concepts: what a channel or a direction of a layer means to the model.

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

__all__ = [
    "ConceptDiscovery",
    "ConceptReferences",
    "ConceptRelevance",
    "concept_references",
    "conditional_relevance",
    "discover_concepts",
    "load_concept_discovery",
    "load_concept_relevance",
    "top_concepts",
]
