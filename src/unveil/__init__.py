"""unveil: explain what a neural network decided, check the explanation, and show it.

Light to import: torch, numpy and the core only. Plotting, reports, the web dashboard and the
text models load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import errors
from .api import explain, explain_generation, make_explainer, methods, options
from .attention import attention
from .attribution import *  # noqa: F403  # every method class, e.g. uv.IntegratedGradients
from .attribution import __all__ as _methods_all
from .core import (
    Explanation,
    FeatureGroups,
    Model,
    load,
    set_memory_budget,
)
from .errors import UnveilError
from .report import Report, report  # eager: a _LAZY entry would be shadowed by the subpackage
from .version import __version__ as __version__

# name -> "module:attribute" loaded on first access (keeps `import unveil` light)
_LAZY: dict[str, str] = {
    "zoo": "unveil.zoo:",
    "explain_dataset": "unveil.scale:explain_dataset",
    "Explainer": "unveil.scale:Explainer",
    "distill": "unveil.surrogate:distill",
    "fidelity_curve": "unveil.surrogate:fidelity_curve",
    "local_surrogate": "unveil.surrogate:local_surrogate",
    "permutation_importance": "unveil.surrogate:permutation_importance",
    "partial_dependence": "unveil.surrogate:partial_dependence",
    "shapley_importance": "unveil.surrogate:shapley_importance",
    "hybrid": "unveil.surrogate:hybrid",
    "bias_audit": "unveil.audit:bias_audit",
    "counterfactuals": "unveil.counterfactual:counterfactuals",
    "Constraints": "unveil.counterfactual:Constraints",
    "Counterfactuals": "unveil.counterfactual:Counterfactuals",
    "anchor": "unveil.counterfactual:anchor",
    "anchor_text": "unveil.counterfactual:anchor_text",
    "counterfactual": "unveil.counterfactual:",
    "surrogate": "unveil.surrogate:",
    "audit": "unveil.audit:",
    "text": "unveil.text:",
    "language": "unveil.language:",
    "metrics": "unveil.metrics:",
    "evaluate": "unveil.metrics:evaluate",
    "sanity_check": "unveil.metrics:sanity_check",
    "trust_card": "unveil.metrics:trust_card",
    "training_influence": "unveil.data_attribution:training_influence",
    "TrainingAttribution": "unveil.data_attribution:TrainingAttribution",
    "data_attribution": "unveil.data_attribution:",
    "CheckpointRecorder": "unveil.data_attribution.tracin:CheckpointRecorder",
    "training_features": "unveil.scale.training:training_features",
    "featurevis": "unveil.featurevis:",
    "visualize": "unveil.featurevis:visualize",
    "objectives": "unveil.featurevis:objectives",
    "invert": "unveil.featurevis:invert",
    "dataset_examples": "unveil.featurevis:dataset_examples",
    "concepts": "unveil.concepts:",
    "conditional_relevance": "unveil.concepts:conditional_relevance",
    "top_concepts": "unveil.concepts:top_concepts",
    "concept_references": "unveil.concepts:concept_references",
    "discover_concepts": "unveil.concepts:discover_concepts",
    "tcav": "unveil.concepts:tcav",
    "TCAVResult": "unveil.concepts:TCAVResult",
}

# the base-class machinery of methods, public in unveil.attribution but not the facade's API
_METHOD_PARTS = ("Attributor", "Call", "FirstPass", "Partial", "refuse_options")

__all__ = [
    "Explanation",
    "Report",
    "attention",
    "report",
    "FeatureGroups",
    "Model",
    *[n for n in _methods_all if n not in ("Attributor", "Call", "FirstPass", "Partial")],
    "UnveilError",
    "errors",
    "explain",
    "explain_generation",
    "load",
    "make_explainer",
    "methods",
    "options",
    "set_memory_budget",
    *_LAZY,
]


def __dir__() -> list[str]:
    """Every public name, the lazily loaded ones included (``dir(unveil)``)."""
    return sorted({*__all__, "__version__"})


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'unveil' has no attribute {name!r}")
    mod_name, _, attr = target.partition(":")
    mod = importlib.import_module(mod_name)
    value = getattr(mod, attr) if attr else mod
    globals()[name] = value
    return value
