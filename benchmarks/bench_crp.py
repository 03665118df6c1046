"""Concept relevance propagation on the digits CNN (W3) against zennit-crp 0.6.0.

Two workloads, the same inputs, model and conditions for both libraries (EpsilonPlusFlat,
relevance started at the predicted logit, conditioned at ``features.6``, 64 channels):

- *top concepts*: for each image the channel relevance at the layer (one pass), the 8 most
  relevant channels, and their 8 conditional heat maps — unveil's :func:`top_concepts` against
  zennit-crp's ``CondAttribution`` with ``record_layer`` + ``ChannelConcept.attribute`` and a
  second call with the 8 conditions;
- *all channels*: 64 conditional heat maps per image (one per channel), unveil's
  :func:`conditional_relevance` against one ``CondAttribution`` call with 64 conditions.

Notes give the largest relative difference of the heat maps, ``max|ours - ref| / max|ref|``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ._common import Context, Row, median_time, use_torchvision_stub, w3

LAYER, K = "features.6", 8


def _zennit_top(att: Any, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    from crp.concepts import ChannelConcept
    from zennit.composites import EpsilonPlusFlat

    maps = []
    for i, y in enumerate(targets):
        xi = x[i:i + 1].clone().requires_grad_(True)
        rec = att(xi, [{"y": [y]}], EpsilonPlusFlat(), record_layer=[LAYER])
        share = ChannelConcept().attribute(rec.relevances[LAYER], abs_norm=True)[0]
        top = torch.argsort(share, descending=True)[:K].tolist()
        res = att(xi, [{LAYER: [c], "y": [y]} for c in top], EpsilonPlusFlat())
        maps.append(res.heatmap.detach().numpy())
    return np.stack(maps)


def _zennit_all(att: Any, x: torch.Tensor, targets: list[int], n_channels: int) -> np.ndarray:
    from zennit.composites import EpsilonPlusFlat

    maps = []
    for i, y in enumerate(targets):
        xi = x[i:i + 1].clone().requires_grad_(True)
        res = att(xi, [{LAYER: [c], "y": [y]} for c in range(n_channels)], EpsilonPlusFlat())
        maps.append(res.heatmap.detach().numpy())
    return np.stack(maps)


def _diff(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def run(ctx: Context) -> list[Row]:
    use_torchvision_stub()
    from crp.attribution import CondAttribution

    from unveil.concepts import conditional_relevance, top_concepts
    from unveil.core import prepared

    model, x = w3(2 if ctx.quick else 16)
    ref_model = copy.deepcopy(model)  # zennit-crp turns requires_grad off on the model it gets
    att = CondAttribution(ref_model)
    reps = ctx.repeats(5)
    rows = []

    prepared.clear()
    ours = top_concepts(model, x, layer=LAYER, k=K, batch_size=64)
    targets = [int(t) for t in ours.targets]
    t = median_time(lambda: top_concepts(model, x, layer=LAYER, k=K, batch_size=64), repeats=reps)
    ref_t = median_time(lambda: _zennit_top(att, x, targets), repeats=reps)
    ref = _zennit_top(att, x, targets)
    same = all(ours.concepts[i] == [[c] for c in _ranked(att, x, i, targets[i])] for i in range(len(targets)))
    rows.append(Row("concepts", f"crp top-{K} concepts + heat maps", f"W3 ({len(x)} images)", t,
                    ref_name="zennit-crp 0.6.0 CondAttribution", ref_s=ref_t, n_evals=ours.n_evals,
                    note=f"max rel. diff {_diff(ours.heatmaps.sum(2), ref):.1e} (float32); "
                    f"same top-{K} channels: {same}"))

    n_ch = ours.channel_relevance.shape[1]
    full = conditional_relevance(model, x, layer=LAYER, target=targets, batch_size=64)
    t = median_time(lambda: conditional_relevance(model, x, layer=LAYER, target=targets, batch_size=64),
                    repeats=reps)
    ref_t = median_time(lambda: _zennit_all(att, x, targets, n_ch), repeats=reps)
    ref = _zennit_all(att, x, targets, n_ch)
    rows.append(Row("concepts", f"crp all {n_ch} channels' heat maps", f"W3 ({len(x)} images)", t,
                    ref_name="zennit-crp 0.6.0 CondAttribution", ref_s=ref_t, n_evals=full.n_evals,
                    note=f"max rel. diff {_diff(full.heatmaps.sum(2), ref):.1e} (float32)"))
    return rows


def _ranked(att: Any, x: torch.Tensor, i: int, y: int) -> list[int]:
    from crp.concepts import ChannelConcept
    from zennit.composites import EpsilonPlusFlat

    xi = x[i:i + 1].clone().requires_grad_(True)
    rec = att(xi, [{"y": [y]}], EpsilonPlusFlat(), record_layer=[LAYER])
    share = ChannelConcept().attribute(rec.relevances[LAYER], abs_norm=True)[0]
    return [int(c) for c in torch.argsort(share, descending=True)[:K]]
