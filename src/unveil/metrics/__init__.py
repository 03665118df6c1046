"""Evaluate explanations: faithfulness, robustness, sanity checks, localisation, agreement,
complexity — and a trust card that sums them up.

>>> import unveil as uv                                              # doctest: +SKIP
>>> exp = uv.explain(model, x, method="saliency")                    # doctest: +SKIP
>>> uv.evaluate(model, exp, metrics=["deletion", "insertion"])       # doctest: +SKIP
>>> res = uv.sanity_check(model, x, method="saliency")               # doctest: +SKIP
>>> res.passed, res.threshold, res.similarity                        # doctest: +SKIP
>>> print(uv.metrics.trust_card(model, exp))                         # doctest: +SKIP

Every metric takes ``(model, exp, **options)`` and returns a :class:`MetricResult` (a batch
figure ``value``, ``per_sample`` figures and ``details``); :func:`evaluate` runs several by name
and files them in ``exp.quality``.
"""

from __future__ import annotations

from ._common import MetricResult
from .agreement import agreement, rank_agreement, top_k_agreement
from .complexity import effective_support, sparseness
from .evaluate import METRICS, evaluate, list_metrics
from .faithfulness import (
    comprehensiveness,
    deletion,
    faithfulness_correlation,
    infidelity,
    insertion,
    sufficiency,
)
from .localisation import boxes_to_masks, pointing_game, rank_accuracy, relevance_mass
from .road import noisy_linear_imputation, road
from .robustness import avg_sensitivity, local_lipschitz, max_sensitivity
from .sanity import SanityResult, random_logit, randomizable_layers, sanity_check
from .similarity import hog_similarity, pearson, spearman, ssim, top_k_intersection
from .trust import TrustCard, Verdict, trust_card

__all__ = [
    "METRICS",
    "MetricResult",
    "SanityResult",
    "TrustCard",
    "Verdict",
    "agreement",
    "avg_sensitivity",
    "boxes_to_masks",
    "comprehensiveness",
    "deletion",
    "effective_support",
    "evaluate",
    "faithfulness_correlation",
    "hog_similarity",
    "infidelity",
    "insertion",
    "list_metrics",
    "local_lipschitz",
    "max_sensitivity",
    "noisy_linear_imputation",
    "pearson",
    "pointing_game",
    "random_logit",
    "randomizable_layers",
    "rank_accuracy",
    "rank_agreement",
    "relevance_mass",
    "road",
    "sanity_check",
    "sparseness",
    "spearman",
    "ssim",
    "sufficiency",
    "top_k_agreement",
    "top_k_intersection",
    "trust_card",
]
