"""Agreement between explanation methods: do different methods tell the same story?

Disagreement is common and is itself a warning (Krishna et al., 2022, "The Disagreement Problem
in Explainable Machine Learning"). :func:`rank_agreement` is the Spearman rank correlation of two
maps and :func:`top_k_agreement` the overlap of their ``k`` most important features, sample by
sample; :func:`agreement` re-explains the same inputs with other registered methods and reports
both against each of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.explanation import Explanation
from ..core.registry import MethodInfo, get_method, list_methods
from ..errors import LayerNotFoundError, MissingExtraError, ModelError, OptionError
from ._common import MetricResult, Prepared, Reexplainer, element_values, nanmean, prepare
from .similarity import spearman, top_k_intersection

__all__ = ["agreement", "default_methods", "rank_agreement", "top_k_agreement"]

_N_DEFAULT = 2  # methods compared with when none are named
#: errors by which a method says it does not apply to this model (not a failure of the metric)
_NOT_APPLICABLE = (ModelError, LayerNotFoundError, MissingExtraError)



def _maps(e: Explanation | Any) -> torch.Tensor:
    """Element-level maps of an explanation (channel-summed for images), or a tensor as is."""
    if isinstance(e, Explanation):
        x = torch.as_tensor(np.asarray(e.inputs))
        v = element_values(e, x).double()
    else:
        v = torch.as_tensor(np.asarray(e) if not isinstance(e, torch.Tensor) else e).double()
    return v.sum(1) if v.ndim == 4 else v


def rank_agreement(a: Explanation | Any, b: Explanation | Any, *, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation per sample between two explanations (or arrays) of the same
    inputs; with ``absolute`` (default) of their magnitudes. Image maps are channel-summed."""
    return spearman(_maps(a), _maps(b), absolute=absolute).cpu().numpy()


def top_k_agreement(a: Explanation | Any, b: Explanation | Any, *, k: int | float = 0.1,
                    absolute: bool = True) -> np.ndarray:
    """Share of the ``k`` most important features (a count, or a fraction below 1) two
    explanations have in common, per sample."""
    return top_k_intersection(_maps(a), _maps(b), k, absolute=absolute).cpu().numpy()


def _order(info: MethodInfo, modality: str) -> tuple[bool, int, bool, str]:
    """Those preferred for the modality first (by their declared rank), then deterministic
    ones before sampling ones, then by name."""
    rank = info.preferred_for.get(modality)
    return (rank is None, 0 if rank is None else rank, info.stochastic, info.name)


def default_methods(p: Prepared, exclude: str, n: int = 2) -> list[str]:
    """Up to ``n`` registered methods, other than ``exclude``, that can explain these inputs:
    those the registry prefers for their modality first, then deterministic ones."""
    modality = p.exp.modality
    out = []
    for info in sorted(list_methods(modality), key=lambda m: _order(m, modality)):
        if info.name == exclude:
            continue
        if info.needs_gradients and not (p.x.is_floating_point() and p.model.differentiable):
            continue
        if info.needs_module and p.model.module is None:
            continue
        if info.needs_data(modality) and p.model.reference is None:
            continue  # no rows of real data to stand for absent features
        out.append(info.name)
        if len(out) == n:
            break
    return out


def agreement(
    model: Any, exp: Explanation, *, methods: Sequence[str] | None = None, k: int | float = 0.1,
    absolute: bool = True, method_options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = 0,
) -> MetricResult:
    """Agreement of ``exp`` with other methods on the same inputs and targets.

    ``methods`` names registered methods (default: the first two that apply to the model, those
    the registry prefers for the inputs' modality first, then deterministic ones; a default
    choice that refuses the model is passed over); ``method_options`` maps a method's name to its
    options. ``per_sample`` is the mean Spearman rank correlation over the other methods;
    ``details`` holds, per method, its mean rank correlation and top-``k`` intersection.
    Higher means more agreement.
    """
    for name, opts in (method_options or {}).items():
        get_method(name).options.check(opts)  # a misspelt option fails before any work
    explicit = methods is not None
    p = prepare(model, exp)
    names = list(methods) if methods is not None else default_methods(p, exp.method, n=len(list_methods()))
    for name in names:
        get_method(name)
    if not names:
        raise OptionError("no other registered method can explain these inputs; pass methods=[...]")
    own = _maps(exp)
    ranks: list[torch.Tensor] = []
    used: list[str] = []
    details: dict[str, Any] = {}
    for name in names:
        if not explicit and len(used) == _N_DEFAULT:
            break
        opts = dict((method_options or {}).get(name, {}))
        if seed is not None and get_method(name).takes_seed:
            opts.setdefault("seed", seed)
        try:
            other = Reexplainer(p.model, name, opts)(p.x, p.targets)
        except _NOT_APPLICABLE:
            if explicit:
                raise
            continue  # a default choice that does not fit this model (no conv layer...): the next
        om = other.sum(1).double().cpu() if other.ndim == 4 else other.double().cpu()
        r = spearman(own, om, absolute=absolute)
        t = top_k_intersection(own, om, k, absolute=absolute)
        ranks.append(r)
        used.append(name)
        details[name] = {"rank_correlation": nanmean(r), "top_k_intersection": nanmean(t)}
    if not ranks:
        raise OptionError("no other registered method can explain these inputs; pass methods=[...]")
    per = torch.stack(ranks, 1).nanmean(1)
    return MetricResult("agreement", nanmean(per), per.numpy(), True, details=details,
                        params={"methods": used, "k": k, "absolute": absolute})
