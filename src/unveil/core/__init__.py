"""Core pieces every method stands on: model adapter, batching, hooks, groups, results."""

from __future__ import annotations

from .baselines import make_background, make_baseline
from .batching import get_memory_budget, map_chunked, run_chunked, set_memory_budget
from .explanation import Explanation, load
from .groups import FeatureGroups, column_groups, columns, patches, superpixels, tokens
from .model import Model, as_model
from .registry import MethodInfo, get_method, list_methods, register

__all__ = [
    "Explanation",
    "FeatureGroups",
    "MethodInfo",
    "Model",
    "as_model",
    "column_groups",
    "columns",
    "get_memory_budget",
    "get_method",
    "list_methods",
    "load",
    "make_background",
    "make_baseline",
    "map_chunked",
    "patches",
    "register",
    "run_chunked",
    "set_memory_budget",
    "superpixels",
    "tokens",
]
