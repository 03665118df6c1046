"""LRP rules, composed from small modifier functions.

A rule for a linear layer ``z = W x + b`` (dense or convolutional) is a list of *groups*, each a
list of *terms*. A term modifies the layer's input and parameters and carries a sign; a group
has a scale (``alpha``, ``-beta``) and an optional mask on the sign of the original output. The
relevance ``R`` of the outputs is redistributed as::

    D_g   = sum_t sign_t * layer(input_t(x); params_t)                 # the group's denominator
    R_in  = sum_g scale_g * sum_t sign_t * input_t(x) * J_t^T [mask_g * R / stab(D_g)]

where ``J_t^T`` is the transpose of the modified layer and ``stab(d) = d + eps * sign(d)``
(``sign(0) = +1``). Every rule of Bach et al. (2015), Montavon et al. (2017, 2019) and
Lapuschkin et al. (2019) has this form:

=============  ==============================================================================
rule           terms (input, params) per group
=============  ==============================================================================
ε / 0          (x, W, b); ``eps`` is the stabiliser (``0`` for LRP-0)
z⁺ (α1β0)      (x⁺, W⁺, b⁺) + (x⁻, W⁻, 0)
α-β            α·[(x⁺, W⁺, b⁺) + (x⁻, W⁻, 0)]  −  β·[(x⁺, W⁻, b⁻) + (x⁻, W⁺, 0)]
γ              [(x⁺, W+γW⁺, b+γb⁺) + (x⁻, W+γW⁻, 0)] where z > 0, and
               [(x⁺, W+γW⁻, b+γb⁻) + (x⁻, W+γW⁺, 0)] where z < 0 (generalised γ, Andéol 2021)
z^B            (x, W, b) − (l, W⁺, b⁺) − (h, W⁻, b⁻) with box bounds ``l ≤ x ≤ h``
flat           (1, 1, 0): relevance spread uniformly over the receptive field
w²             (1, W², 0)
=============  ==============================================================================

Layers without parameters use the *norm* rule (ε on the layer itself: average pooling, the sum of
a residual connection), element-wise activations and unfolded batch norms *pass* relevance
unchanged, and everything else (max pooling, flatten, dropout) follows the *gradient*.
These conventions, and the constants, are Zennit's (Anders et al., 2021).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Union

import torch

from ...errors import OptionError

__all__ = [
    "Group",
    "InputModifier",
    "ParamModifier",
    "Rule",
    "Term",
    "alpha_beta",
    "bound_input",
    "epsilon",
    "flat",
    "gamma",
    "gamma_params",
    "gradient",
    "keep_input",
    "keep_params",
    "negative_input",
    "negative_params",
    "norm",
    "ones_input",
    "pass_through",
    "positive_input",
    "positive_params",
    "square_params",
    "stabilize",
    "unit_params",
    "w_square",
    "without_bias",
    "z_box",
    "z_plus",
    "zero",
]

InputModifier = Callable[[torch.Tensor], torch.Tensor]
ParamModifier = Callable[[torch.Tensor, str], torch.Tensor]
Bound = Union[float, torch.Tensor, None]


# -- input modifiers ----------------------------------------------------------------------
def keep_input(x: torch.Tensor) -> torch.Tensor:
    """The input itself."""
    return x


def positive_input(x: torch.Tensor) -> torch.Tensor:
    """``x⁺ = max(x, 0)``."""
    return x.clamp(min=0)


def negative_input(x: torch.Tensor) -> torch.Tensor:
    """``x⁻ = min(x, 0)``."""
    return x.clamp(max=0)


def ones_input(x: torch.Tensor) -> torch.Tensor:
    """All ones (flat and w² rules: relevance does not depend on the input's values)."""
    return torch.ones_like(x)


def bound_input(bound: Bound, which: Literal["low", "high"]) -> InputModifier:
    """A box bound broadcast to the input: a number, a tensor broadcastable to one sample or to
    the batch, or ``None`` for each row's own minimum (``"low"``) or maximum (``"high"``)."""

    def modifier(x: torch.Tensor) -> torch.Tensor:
        if bound is None:
            dims = tuple(range(1, x.ndim))
            v = x.amin(dim=dims, keepdim=True) if which == "low" else x.amax(dim=dims, keepdim=True)
            return v.expand_as(x)
        t = torch.as_tensor(bound, dtype=x.dtype, device=x.device)
        return t.expand_as(x) if t.ndim == x.ndim else t.expand(x.shape[1:]).expand_as(x)

    return modifier


# -- parameter modifiers ------------------------------------------------------------------
def keep_params(p: torch.Tensor, name: str) -> torch.Tensor:
    """The parameter itself."""
    return p


def positive_params(p: torch.Tensor, name: str) -> torch.Tensor:
    """``W⁺``, ``b⁺``."""
    return p.clamp(min=0)


def negative_params(p: torch.Tensor, name: str) -> torch.Tensor:
    """``W⁻``, ``b⁻``."""
    return p.clamp(max=0)


def square_params(p: torch.Tensor, name: str) -> torch.Tensor:
    """``W²``."""
    return p * p


def unit_params(p: torch.Tensor, name: str) -> torch.Tensor:
    """All ones."""
    return torch.ones_like(p)


def gamma_params(g: float, part: Literal["positive", "negative"]) -> ParamModifier:
    """``W + γ W⁺`` (``part="positive"``) or ``W + γ W⁻``."""

    def modifier(p: torch.Tensor, name: str) -> torch.Tensor:
        return p + g * (p.clamp(min=0) if part == "positive" else p.clamp(max=0))

    return modifier


def without_bias(modifier: ParamModifier) -> ParamModifier:
    """``modifier`` for the weight, zero for the bias."""

    def wrapped(p: torch.Tensor, name: str) -> torch.Tensor:
        return torch.zeros_like(p) if name == "bias" else modifier(p, name)

    return wrapped


def stabilize(
    d: torch.Tensor, eps: float, sign: Literal["positive", "negative"] | None = None
) -> torch.Tensor:
    """``d + eps * sign(d)`` with ``sign(0) = +1`` (Zennit's stabiliser).

    With a known ``sign`` of ``d`` the shift is a single addition.
    """
    if eps == 0:
        return d
    if sign == "positive":
        return d + eps
    if sign == "negative":
        return d - eps
    return torch.where(d >= 0, d + eps, d - eps)


# -- rules --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One modified copy of the layer: input modifier, parameter modifier, sign."""

    input: InputModifier
    params: ParamModifier
    sign: float = 1.0


@dataclass(frozen=True)
class Group:
    """Terms sharing one denominator; ``scale`` multiplies their relevance, ``where`` masks
    output positions by the sign of the original output (``None``: all). ``sign`` declares a
    sign the denominator always has (``"positive"``: ``>= 0``), which lets the stabiliser skip
    its sign test; it must hold for every input."""

    terms: tuple[Term, ...]
    scale: float = 1.0
    where: Literal["positive", "negative"] | None = None
    sign: Literal["positive", "negative"] | None = None


@dataclass(frozen=True)
class Rule:
    """An LRP rule: ``kind="lrp"`` with groups of terms, or ``"norm"``, ``"pass"``, ``"gradient"``.

    ``stabilizer`` is the ``eps`` of :func:`stabilize` (the ε of the ε-rule).
    """

    name: str
    groups: tuple[Group, ...] = ()
    stabilizer: float = 1e-6
    kind: Literal["lrp", "norm", "pass", "gradient"] = "lrp"

    def __post_init__(self) -> None:
        if self.stabilizer < 0:
            raise OptionError(f"the stabiliser of rule {self.name!r} must be >= 0, got {self.stabilizer}")
        if self.kind == "lrp" and not self.groups:
            raise OptionError(f"rule {self.name!r} of kind 'lrp' needs at least one group of terms")


def _g(*terms: Term, scale: float = 1.0, where: Literal["positive", "negative"] | None = None,
       sign: Literal["positive", "negative"] | None = None) -> Group:
    return Group(tuple(terms), scale, where, sign)


def epsilon(eps: float = 1e-6, *, bias: bool = True) -> Rule:
    """ε-rule (Bach et al., 2015): ``R_i = sum_j x_i w_ij / (z_j + ε sign z_j) R_j``."""
    params = keep_params if bias else without_bias(keep_params)
    return Rule("epsilon", (_g(Term(keep_input, params)),), stabilizer=eps)


def zero() -> Rule:
    """LRP-0 (Bach et al., 2015): the ε-rule with ``ε = 0`` (zero denominators give zero)."""
    return Rule("zero", (_g(Term(keep_input, keep_params)),), stabilizer=0.0)


def z_plus(stabilizer: float = 1e-6) -> Rule:
    """z⁺-rule (Montavon et al., 2017), i.e. α1β0 allowing negative inputs."""
    return Rule("z_plus", (_g(Term(positive_input, positive_params),
                              Term(negative_input, without_bias(negative_params)),
                              sign="positive"),),
                stabilizer=stabilizer)


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> Rule:
    """αβ-rule (Bach et al., 2015): positive and negative contributions weighted by ``α``, ``β``
    (``α - β = 1``; α1β0 and α2β1 are the usual choices)."""
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
        raise OptionError(f"alpha and beta must be >= 0 with alpha - beta = 1, got {alpha}, {beta}")
    pos = _g(Term(positive_input, positive_params),
             Term(negative_input, without_bias(negative_params)), scale=alpha, sign="positive")
    neg = _g(Term(positive_input, negative_params),
             Term(negative_input, without_bias(positive_params)), scale=-beta, sign="negative")
    groups = (pos, neg) if beta else (pos,)
    return Rule(f"alpha{alpha:g}_beta{beta:g}", groups, stabilizer=stabilizer)


def gamma(g: float = 0.25, stabilizer: float = 1e-6) -> Rule:
    """γ-rule (Montavon et al., 2019), generalised to signed inputs and outputs (Andéol et al.,
    2021): positive contributions are boosted by ``γ`` for positive outputs, negative ones for
    negative outputs."""
    if g < 0:
        raise OptionError(f"gamma must be >= 0, got {g}")
    gp, gn = gamma_params(g, "positive"), gamma_params(g, "negative")
    up = _g(Term(positive_input, gp), Term(negative_input, without_bias(gn)), where="positive")
    down = _g(Term(positive_input, gn), Term(negative_input, without_bias(gp)), where="negative")
    return Rule("gamma", (up, down), stabilizer=stabilizer)


def z_box(low: Bound = None, high: Bound = None, stabilizer: float = 1e-6) -> Rule:
    """z^B-rule (Montavon et al., 2017) for inputs bounded by ``low <= x <= high``.

    Bounds are numbers or tensors broadcastable to a sample (e.g. ``(C, 1, 1)`` per channel);
    ``None`` uses each row's own minimum / maximum.
    """
    return Rule("z_box", (_g(Term(keep_input, keep_params),
                             Term(bound_input(low, "low"), positive_params, -1.0),
                             Term(bound_input(high, "high"), negative_params, -1.0)),),
                stabilizer=stabilizer)


def flat(stabilizer: float = 1e-6) -> Rule:
    """Flat rule (Lapuschkin et al., 2019): relevance spread uniformly over each receptive field."""
    return Rule("flat", (_g(Term(ones_input, without_bias(unit_params)), sign="positive"),),
                stabilizer=stabilizer)


def w_square(stabilizer: float = 1e-6) -> Rule:
    """w²-rule (Montavon et al., 2017): relevance in proportion to squared weights (no bias)."""
    return Rule("w_square", (_g(Term(ones_input, without_bias(square_params)), sign="positive"),),
                stabilizer=stabilizer)


def norm(stabilizer: float = 1e-6) -> Rule:
    """ε-rule for a layer without parameters (average pooling, a sum): ``R_i = x_i J^T(R / z)``."""
    return Rule("norm", stabilizer=stabilizer, kind="norm")


def pass_through() -> Rule:
    """Relevance passes unchanged (element-wise activations, unfolded batch norms)."""
    return Rule("pass", kind="pass")


def gradient() -> Rule:
    """Relevance follows the ordinary gradient (max pooling routes it to the maximum)."""
    return Rule("gradient", kind="gradient")
