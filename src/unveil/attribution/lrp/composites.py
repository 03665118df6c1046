"""Composites: which LRP rule each layer of a model gets.

A :class:`Composite` maps layer *names* (exact dotted names), the *first* linear layer in
execution order, and layer *types* to rules, in that order of precedence; whatever no entry
matches falls to the base map (element-wise activations and unfolded batch norms pass relevance,
average pooling uses the norm rule) or, failing that, to the gradient. It also lists the
canonizers applied to the model's copy first.

Presets (Montavon et al., 2019; Kohlbrenner et al., 2020; the constants are Zennit's):

========================  ===============================================================
``"epsilon"``             ε for every dense and convolutional layer
``"epsilon_plus"``        z⁺ for convolutions, ε for dense layers
``"epsilon_plus_flat"``   as ``epsilon_plus``, with the flat rule on the first linear layer
``"epsilon_gamma_box"``   z^B on the first convolution, γ on the others, ε on dense layers
``"epsilon_alpha2_beta1"``  α2β1 for convolutions, ε for dense layers
========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import nn

from ...errors import OptionError
from . import rules as R
from .canonizers import Canonizer, default_canonizers

__all__ = [
    "ACTIVATIONS",
    "AVG_POOLS",
    "BATCH_NORMS",
    "CONVOLUTIONS",
    "DENSE",
    "LINEAR_LAYERS",
    "PRESETS",
    "Composite",
    "preset",
]

Types = Union[type, tuple[type, ...]]

CONVOLUTIONS: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
DENSE: tuple[type, ...] = (nn.Linear,)
LINEAR_LAYERS: tuple[type, ...] = CONVOLUTIONS + DENSE
ACTIVATIONS: tuple[type, ...] = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.ReLU6, nn.PReLU, nn.Hardtanh, nn.Hardswish,
)
AVG_POOLS: tuple[type, ...] = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
BATCH_NORMS: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PRESETS = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")


@dataclass
class Composite:
    """Rules per layer name, for the first linear layer, and per layer type; plus canonizers.

    Parameters
    ----------
    layer_map
        ``[(types, rule), ...]``; the first entry whose types match a layer applies.
    first_map
        Like ``layer_map``, for the first layer in execution order that matches any entry.
    name_map
        ``{dotted name: rule}`` for particular layers (highest precedence).
    canonizers
        Applied to the model's copy first (default :func:`default_canonizers`).
    stabilizer
        Stabiliser of the base map's norm rule (average pooling).
    name
        A label for the explanation's metadata.
    """

    layer_map: Sequence[tuple[Types, R.Rule]] = ()
    first_map: Sequence[tuple[Types, R.Rule]] = ()
    name_map: Mapping[str, R.Rule] = field(default_factory=dict)
    canonizers: Sequence[Canonizer] = field(default_factory=default_canonizers)
    stabilizer: float = 1e-6
    name: str = "custom"

    def base_map(self) -> list[tuple[Types, R.Rule]]:
        """Activations and batch norms pass; average pooling uses the norm rule."""
        return [(ACTIVATIONS, R.pass_through()), (BATCH_NORMS, R.pass_through()),
                (AVG_POOLS, R.norm(self.stabilizer))]

    def first_types(self) -> tuple[type, ...]:
        """Every type that ``first_map`` names."""
        out: list[type] = []
        for types, _ in self.first_map:
            out.extend(types if isinstance(types, tuple) else (types,))
        return tuple(out)

    def rule_for(self, name: str, module: nn.Module, *, first: bool) -> R.Rule | None:
        """The rule of one layer, or ``None`` (the gradient, without any wrapping)."""
        if name in self.name_map:
            return self.name_map[name]
        if first:
            for types, rule in self.first_map:
                if isinstance(module, types):
                    return rule
        if list(module.children()):
            return None  # type maps apply to leaf modules only
        for types, rule in [*self.layer_map, *self.base_map()]:
            if isinstance(module, types):
                return rule
        return None


def preset(
    name: str,
    *,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    gamma: float = 0.25,
    low: float | torch.Tensor | None = None,
    high: float | torch.Tensor | None = None,
    canonizers: Sequence[Canonizer] | None = None,
) -> Composite:
    """A preset composite by name (see the module docstring); ``low``/``high`` are z^B's bounds."""
    eps = R.epsilon(epsilon)
    cans = list(canonizers) if canonizers is not None else default_canonizers(stabilizer)
    maps: dict[str, tuple[list[tuple[Types, R.Rule]], list[tuple[Types, R.Rule]]]] = {
        "epsilon": ([(LINEAR_LAYERS, eps)], []),
        "epsilon_plus": ([(CONVOLUTIONS, R.z_plus(stabilizer)), (DENSE, eps)], []),
        "epsilon_plus_flat": ([(CONVOLUTIONS, R.z_plus(stabilizer)), (DENSE, eps)],
                              [(LINEAR_LAYERS, R.flat(stabilizer))]),
        "epsilon_gamma_box": ([(CONVOLUTIONS, R.gamma(gamma, stabilizer)), (DENSE, eps)],
                              [(CONVOLUTIONS, R.z_box(low, high, stabilizer))]),
        "epsilon_alpha2_beta1": ([(CONVOLUTIONS, R.alpha_beta(2.0, 1.0, stabilizer)), (DENSE, eps)], []),
    }
    if name not in maps:
        raise OptionError(
            f"unknown LRP composite {name!r}; choose one of {', '.join(PRESETS)} or pass a "
            "Composite object"
        )
    layer_map, first_map = maps[name]
    return Composite(layer_map=layer_map, first_map=first_map, canonizers=cans,
                     stabilizer=stabilizer, name=name)
