"""Inside the network: feature visualization, feature inversion, dataset examples, inspection.

- :func:`visualize` — activation maximization (Erhan et al. 2009; Olah et al. 2017) for images
  (pixel or decorrelated Fourier parameterization, random transforms, regularizers) and
  "prototype inputs" inside a box for other inputs; objectives in :mod:`.objectives`.
- :func:`invert` — feature inversion (Mahendran & Vedaldi 2015).
- :func:`dataset_examples` — the top-k inputs and receptive-field patches for a unit.
- :mod:`.inspection` — weight statistics, activation statistics, per-class mean activations.

Every routine runs the model in eval mode with frozen parameters and removes its hooks
afterwards, also when the model raises.
"""

from __future__ import annotations

from . import objectives, transforms
from ._receptive import receptive_boxes
from .examples import DatasetExamples, dataset_examples
from .inspection import (
    ActivationStats,
    ClassMeans,
    Table,
    activation_stats,
    class_mean_activations,
    weight_stats,
)
from .inversion import Inversion, invert
from .objectives import Objective
from .visualize import Visualization, visualize

__all__ = [
    "ActivationStats",
    "ClassMeans",
    "DatasetExamples",
    "Inversion",
    "Objective",
    "Table",
    "Visualization",
    "activation_stats",
    "class_mean_activations",
    "dataset_examples",
    "invert",
    "objectives",
    "receptive_boxes",
    "transforms",
    "visualize",
    "weight_stats",
]
