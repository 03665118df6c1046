"""``unveil.evaluate``: run named metrics on an explanation and file the figures in
``exp.quality``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.explanation import Explanation
from ..errors import InputError, OptionError
from ._common import MetricResult
from .agreement import agreement
from .complexity import effective_support, sparseness
from .faithfulness import (
    comprehensiveness,
    deletion,
    faithfulness_correlation,
    infidelity,
    insertion,
    sufficiency,
)
from .localisation import pointing_game, rank_accuracy, relevance_mass
from .road import road
from .robustness import avg_sensitivity, local_lipschitz, max_sensitivity
from .sanity import random_logit, sanity_metric

__all__ = ["METRICS", "evaluate", "list_metrics"]

MetricFn = Callable[..., MetricResult]

#: every metric :func:`evaluate` knows, by name
METRICS: dict[str, MetricFn] = {
    "deletion": deletion,
    "insertion": insertion,
    "road": road,
    "faithfulness_correlation": faithfulness_correlation,
    "infidelity": infidelity,
    "comprehensiveness": comprehensiveness,
    "sufficiency": sufficiency,
    "max_sensitivity": max_sensitivity,
    "avg_sensitivity": avg_sensitivity,
    "local_lipschitz": local_lipschitz,
    "sanity": sanity_metric,
    "random_logit": random_logit,
    "pointing_game": pointing_game,
    "relevance_mass": relevance_mass,
    "rank_accuracy": rank_accuracy,
    "agreement": agreement,
    "sparseness": sparseness,
    "effective_support": effective_support,
}

_DEFAULT = ("deletion", "insertion", "sparseness")


def list_metrics() -> list[str]:
    """Names of the metrics :func:`evaluate` accepts."""
    return list(METRICS)


def _options_of(fn: MetricFn) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY}


def _route(names: Sequence[str], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-metric options: ``name={...}`` for one metric, any other option for every metric
    that takes it. An option no chosen metric takes is an error (a typo would be silent)."""
    routed: dict[str, dict[str, Any]] = {n: {} for n in names}
    unused = []
    for key, value in options.items():
        if key in METRICS:
            if key not in routed:
                raise OptionError(f"options given for {key!r}, which is not among the metrics {list(names)}")
            if not isinstance(value, Mapping):
                raise OptionError(f"{key}= must be a dict of that metric's options, got {type(value).__name__}")
            bad = sorted(set(value) - _options_of(METRICS[key]))
            if bad:
                raise OptionError(f"{key!r} takes no option(s) {bad}; it takes {sorted(_options_of(METRICS[key]))}")
            routed[key].update(value)
            continue
        takers = [n for n in names if key in _options_of(METRICS[n])]
        if not takers:
            unused.append(key)
        for n in takers:
            routed[n].setdefault(key, value)
    if unused:
        raise OptionError(f"no chosen metric takes the option(s) {sorted(unused)}; metrics "
                          f"{list(names)} take {sorted(set().union(*(_options_of(METRICS[n]) for n in names)))}")
    return routed


def evaluate(
    model: Any,
    exp: Explanation,
    metrics: Sequence[str] | str | None = None,
    **options: Any,
) -> dict[str, MetricResult]:
    """Measure the quality of an explanation; the figures go to ``exp.quality``.

    Parameters
    ----------
    model
        The explained model (any model :func:`unveil.explain` accepts).
    exp : Explanation
        The explanation to judge (its inputs, targets, method and options are reused).
    metrics : list of str
        Names from :data:`METRICS` (default ``deletion``, ``insertion``, ``sparseness``):
        faithfulness (``deletion``, ``insertion``, ``road``, ``faithfulness_correlation``,
        ``infidelity``, ``comprehensiveness``, ``sufficiency``), robustness
        (``max_sensitivity``, ``avg_sensitivity``, ``local_lipschitz``), randomisation
        (``sanity``, ``random_logit``), localisation (``pointing_game``, ``relevance_mass``,
        ``rank_accuracy``; need ``mask=`` or ``box=``), ``agreement`` and complexity
        (``sparseness``, ``effective_support``).
    **options
        ``seed=``, ``baseline=``, ``mask=`` ... go to every chosen metric that takes them;
        ``deletion={"n_steps": 100}`` gives options to one metric only.

    Returns
    -------
    dict
        ``{name: MetricResult}``; ``exp.quality[name]`` holds each result's ``to_dict()``.
    """
    if not isinstance(exp, Explanation):
        raise InputError(f"evaluate() judges an Explanation (from uv.explain), got {type(exp).__name__}")
    names = [metrics] if isinstance(metrics, str) else list(metrics if metrics is not None else _DEFAULT)
    for n in names:
        if n not in METRICS:
            close = difflib.get_close_matches(n, list(METRICS), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise OptionError(f"unknown metric {n!r}.{hint} Available: {', '.join(METRICS)}")
    routed = _route(names, options)
    out: dict[str, MetricResult] = {}
    for n in names:
        res = METRICS[n](model, exp, **routed[n])
        out[n] = res
        exp.quality[n] = res.to_dict()
    return out
