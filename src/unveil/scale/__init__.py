"""Whole datasets and real time: sharded, resumable runs (local or Dask) and budgeted explainers."""

from __future__ import annotations

from .dataset import DatasetRun, explain_dataset
from .realtime import Explainer

__all__ = ["DatasetRun", "Explainer", "explain_dataset"]
