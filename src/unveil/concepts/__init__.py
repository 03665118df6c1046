"""Concepts: what a channel or a direction of a layer means to the model.

- :mod:`.crp` — concept relevance propagation (Achtibat et al. 2023): heat maps conditioned on
  channels, the most relevant concepts of a prediction and their reference examples.
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

__all__ = [
    "ConceptReferences",
    "ConceptRelevance",
    "concept_references",
    "conditional_relevance",
    "load_concept_relevance",
    "top_concepts",
]
