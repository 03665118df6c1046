"""Localisation: does the explanation point at where the evidence is, when that is known?

Given a ground-truth mask (or box) per sample:

- :func:`pointing_game` (Zhang et al., 2018, "Top-down Neural Attention by Excitation Backprop",
  IJCV): 1 if the map's maximum falls inside the mask (any of them, on ties), else 0.
- :func:`relevance_mass` (Arras et al., 2022, "CLEVR-XAI", Information Fusion): the share of the
  total attribution that lies inside the mask.
- :func:`rank_accuracy` (Arras et al., 2022): with ``K`` the mask's size, the share of the ``K``
  highest-scoring elements that lie inside the mask.

Image maps are summed over channels unless the mask has the inputs' channels. The model is not
needed (the argument is there so every metric has the same signature).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.explanation import Explanation
from ..errors import InputError
from ._common import MetricResult, element_values, nanmean

__all__ = ["boxes_to_masks", "pointing_game", "rank_accuracy", "relevance_mass"]


def boxes_to_masks(boxes: Any, shape: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool masks from boxes (N, 4) given as ``(x0, y0, x1, y1)`` pixel coordinates,
    ``x`` the column and ``y`` the row, end exclusive."""
    b = torch.as_tensor(np.asarray(boxes)).long()
    if b.ndim == 1:
        b = b.unsqueeze(0)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be (N, 4) as (x0, y0, x1, y1), got shape {tuple(b.shape)}")
    h, w = shape
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    x0, y0, x1, y1 = (b[:, k].view(-1, 1, 1) for k in range(4))
    return (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)


def _maps_and_masks(exp: Explanation, mask: Any, box: Any, absolute: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened maps (N, D) and boolean masks (N, D) at the same resolution."""
    x = torch.as_tensor(np.asarray(exp.inputs))
    v = element_values(exp, x).double()
    if absolute:
        v = v.abs()
    if (mask is None) == (box is None):
        raise InputError("localisation metrics need exactly one of mask= (N, ...) or box= (N, 4)")
    if box is not None:
        if x.ndim != 4:
            raise InputError(f"box= is for images (N, C, H, W); these inputs have shape {tuple(x.shape)}")
        m = boxes_to_masks(box, (int(x.shape[-2]), int(x.shape[-1])))
    else:
        m = torch.as_tensor(np.asarray(mask)).bool()
    n = v.shape[0]
    if m.shape[0] != n:
        raise InputError(f"got {m.shape[0]} masks for {n} explained samples")
    if x.ndim == 4:
        if m.ndim == 4 and m.shape[1] == x.shape[1] and x.shape[1] > 1:
            pass  # per-channel masks: compare element by element
        else:
            if m.ndim == 4 and m.shape[1] == 1:
                m = m[:, 0]
            v = v.sum(1)
    if tuple(m.shape[1:]) != tuple(v.shape[1:]):
        raise InputError(
            f"masks of shape {tuple(m.shape)} do not fit attributions of shape {tuple(v.shape)}; "
            "for images give (N, H, W) or (N, 1, H, W) masks or (N, 4) boxes"
        )
    return v.reshape(n, -1), m.reshape(n, -1)


def _result(name: str, per: torch.Tensor, empty: torch.Tensor) -> MetricResult:
    per = torch.where(empty, torch.full_like(per, float("nan")), per)
    return MetricResult(name, nanmean(per), per.cpu().numpy(), True,
                        details={"n_empty_masks": int(empty.sum())})


def pointing_game(model: Any, exp: Explanation, *, mask: Any = None, box: Any = None,
                  absolute: bool = False) -> MetricResult:
    """Pointing game (Zhang et al., 2018): 1 where the map's maximum (any of them, on ties)
    lies inside the ground-truth ``mask`` (or ``box``), else 0; NaN for an empty mask. The map
    is taken as is (``absolute=True`` uses ``|values|``)."""
    v, m = _maps_and_masks(exp, mask, box, absolute)
    top = v == v.max(1, keepdim=True).values
    hit = (top & m).any(1).double()
    return _result("pointing_game", hit, m.sum(1) == 0)


def relevance_mass(model: Any, exp: Explanation, *, mask: Any = None, box: Any = None,
                   absolute: bool = False) -> MetricResult:
    """Relevance mass accuracy (Arras et al., 2022): attribution inside the mask over the total
    attribution (``absolute=True`` uses ``|values|``, making it a share in [0, 1])."""
    v, m = _maps_and_masks(exp, mask, box, absolute)
    per = (v * m).sum(1) / v.sum(1)
    return _result("relevance_mass", per, m.sum(1) == 0)


def rank_accuracy(model: Any, exp: Explanation, *, mask: Any = None, box: Any = None,
                  absolute: bool = False) -> MetricResult:
    """Relevance rank accuracy (Arras et al., 2022): the share of the ``K`` highest-scoring
    elements inside the mask, ``K`` being the mask's size (ties broken by position)."""
    v, m = _maps_and_masks(exp, mask, box, absolute)
    k = m.sum(1)
    order = torch.argsort(-v, dim=1, stable=True)
    inside = m.gather(1, order).double()
    pos = torch.arange(v.shape[1]).view(1, -1)
    per = (inside * (pos < k.view(-1, 1))).sum(1) / k.clamp(min=1)
    return _result("rank_accuracy", per, k == 0)
