"""Layer-wise relevance propagation: rules, composites, canonizers and the ``lrp`` method.

>>> import torch
>>> from torch import nn
>>> import unveil as uv
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)).eval()
>>> x = torch.rand(2, 3, 8, 8)
>>> exp = uv.explain(model, x, method="lrp", composite="epsilon_plus_flat")
>>> exp.values.shape
(2, 3, 8, 8)
>>> from unveil.attribution.lrp import Composite, rules, CONVOLUTIONS, DENSE
>>> comp = Composite(layer_map=[(CONVOLUTIONS, rules.gamma(0.5)), (DENSE, rules.epsilon(0.1))],
...                  name_map={"0": rules.flat()})
>>> exp = uv.LRP(model, composite=comp)(x)
>>> exp.meta["rules"]["0"], exp.meta["rules"]["3"]  # the name map wins over the type map
('flat', 'epsilon')
"""

from __future__ import annotations

from . import rules
from ._engine import Prepared, prepare
from .canonizers import Canonizer, MergeBatchNorm, ResidualAddition, default_canonizers
from .composites import (
    ACTIVATIONS,
    AVG_POOLS,
    BATCH_NORMS,
    CONVOLUTIONS,
    DENSE,
    LINEAR_LAYERS,
    PRESETS,
    Composite,
    preset,
)
from .method import LRP
from .rules import Group, Rule, Term

__all__ = [
    "ACTIVATIONS",
    "AVG_POOLS",
    "BATCH_NORMS",
    "CONVOLUTIONS",
    "DENSE",
    "LINEAR_LAYERS",
    "LRP",
    "PRESETS",
    "Prepared",
    "Canonizer",
    "Composite",
    "Group",
    "MergeBatchNorm",
    "ResidualAddition",
    "Rule",
    "Term",
    "default_canonizers",
    "prepare",
    "preset",
    "rules",
]
