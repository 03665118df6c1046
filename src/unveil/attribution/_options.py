"""Options several attribution methods share, declared once (see :mod:`unveil.core.options`)."""

from __future__ import annotations

from typing import Literal, Union

from torch import nn

from ..core.groups import FeatureGroups
from ..core.options import ArrayLike, Option
from ._layers import NeuronSpec

__all__ = ["BASELINE", "GROUPS", "LAYER", "MASK_ID", "NEURON", "REFERENCE", "SPACE"]

BaselineName = Literal["zeros", "blur", "mean", "uniform"]

BASELINE = Option(
    "baseline", Union[float, BaselineName, ArrayLike, None], None,
    "reference input: a number, 'zeros' (None), 'blur', 'mean', 'uniform' (seeded) or an array "
    "broadcastable to the inputs (token ids for text)", where="call")
LAYER = Option(
    "layer", Union[str, nn.Module, None], None,
    "a layer of the model (its dotted name or the module itself): attribute to its output "
    "instead of the input", where="call")
NEURON = Option(
    "neuron", NeuronSpec, None,
    "explain one unit instead of the target score: ('layer.name', index or callable), or an "
    "index or callable into the output of layer=", where="call")
MASK_ID = Option(
    "mask_id", Union[int, None], None,
    "token id that replaces removed tokens (token-id inputs)", low=0, where="call")
GROUPS = Option(
    "groups", Union[FeatureGroups, None], None,
    "feature groups (the players): default one per column, 8x8 patches, or one per token",
    where="call")

#: Call options of methods that attribute in an input or layer space (gradient methods).
SPACE = (LAYER, NEURON)
#: Call options of methods that replace features by a reference (perturbation, Shapley, LIME).
REFERENCE = (GROUPS, BASELINE, MASK_ID)
