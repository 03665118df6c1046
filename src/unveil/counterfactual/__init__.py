"""What would change the decision: counterfactuals, anchors and recourse in words.

* :func:`counterfactuals` — the nearest rows the model gives another class, within hard
  :class:`Constraints` (immutable, one-direction, ranges, integer, categorical, a feasibility
  function), several diverse ones per row, with CARLA's metrics and a sentence per row.
* :func:`anchor` / :func:`anchor_text` — rules that keep the decision (Ribeiro et al., 2018):
  predicates on a table's columns, or words kept in a text, with their precision and coverage.
"""

from __future__ import annotations

from .anchors import Anchor, anchor, anchor_text
from .constraints import Constraints
from .decision import Decision, decide
from .result import Counterfactuals, recourse_sentence
from .search import counterfactuals

__all__ = ["Anchor", "Constraints", "Counterfactuals", "Decision", "anchor", "anchor_text", "counterfactuals",
           "decide", "recourse_sentence"]
