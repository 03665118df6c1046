"""The units perturbation metrics remove or keep: pixels, single elements, or feature groups,
with the order in which they go."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.groups import FeatureGroups
from ..errors import OptionError
from ._common import Prepared, groups_of

__all__ = ["FeatureSpec", "Features", "feature_count_steps", "features"]

FeatureSpec = Any  # "auto" | "pixels" | "elements" | FeatureGroups
_NEVER = torch.iinfo(torch.int64).max


@dataclass
class Features:
    """The units a perturbation metric removes or keeps: pixels, elements or groups.

    ``labels`` (N or 1, D) gives each input element's feature (-1: never perturbed), or
    ``masks`` (F, D) lists the elements of each (possibly overlapping) feature; ``scores``
    (N, F) is the attribution of each feature.
    """

    scores: torch.Tensor
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    @property
    def n_features(self) -> int:
        return int(self.scores.shape[1])

    def ranks(self, order: str, seed: int | None = None) -> torch.Tensor:
        """(N, F) position of each feature in the removal order ``"morf"`` (most relevant
        first), ``"lerf"`` (least relevant first) or ``"random"`` (seeded)."""
        s = self.scores
        if order == "morf":
            perm = torch.argsort(-s, dim=1, stable=True)
        elif order == "lerf":
            perm = torch.argsort(s, dim=1, stable=True)
        elif order == "random":
            g = torch.Generator().manual_seed(0 if seed is None else int(seed))
            perm = torch.argsort(torch.rand(s.shape, generator=g), dim=1).to(s.device)
        else:
            raise OptionError(f"order must be 'morf', 'lerf' or 'random', got {order!r}")
        rank = torch.empty_like(perm)
        rank.scatter_(1, perm, torch.arange(s.shape[1], device=s.device).expand_as(perm).contiguous())
        return rank

    def element_ranks(self, ranks: torch.Tensor) -> torch.Tensor:
        """(N, D) rank of the feature each element belongs to (the earliest one for
        overlapping features; a huge number for elements of no feature)."""
        if self.labels is not None:
            lab = self.labels.expand(ranks.shape[0], -1)
            r = ranks.gather(1, lab.clamp(min=0))
            return torch.where(lab >= 0, r, torch.full_like(r, _NEVER))
        assert self.masks is not None
        big = torch.full((), _NEVER, dtype=ranks.dtype, device=ranks.device)
        return torch.where(self.masks.unsqueeze(0), ranks.unsqueeze(2), big).amin(1)

    def element_mask(self, chosen: torch.Tensor) -> torch.Tensor:
        """(N, D) bool: elements belonging to a chosen feature, from ``chosen`` (N, F) bool."""
        if self.labels is not None:
            lab = self.labels.expand(chosen.shape[0], -1)
            return chosen.gather(1, lab.clamp(min=0)) & (lab >= 0)
        assert self.masks is not None
        return (chosen.float() @ self.masks.float()) > 0


def features(p: Prepared, spec: FeatureSpec = "auto") -> Features:
    """The features of ``p``: the explanation's groups (``"auto"`` when it has some), image
    pixels (all channels of a position together; ``"auto"`` for images), single elements, or
    a given :class:`FeatureGroups`. Feature scores are the summed attributions of their elements
    (group-level values are used as they are)."""
    n, d = p.n, int(p.x[0].numel())
    groups = spec if isinstance(spec, FeatureGroups) else None
    if spec == "auto":
        groups = groups_of(p.exp)
        spec = "pixels" if groups is None and p.is_image else "elements"
    flat = p.values.reshape(n, d)
    if groups is not None:
        groups.check(p.x)
        raw = np.asarray(p.exp.values)
        if groups.labels is not None:
            labels = groups.labels.reshape(groups.labels.shape[0], d).to(p.x.device)
            masks = None
        else:
            assert groups.mask_tensor is not None
            labels, masks = None, groups.mask_tensor.reshape(groups.n_groups, d).to(p.x.device)
        if raw.ndim == 2 and raw.shape == (n, groups.n_groups) and tuple(p.x.shape) != (n, groups.n_groups):
            scores = torch.as_tensor(raw, dtype=torch.float32, device=p.x.device)
        elif labels is not None:
            lab = labels.expand(n, -1)
            scores = torch.zeros(n, groups.n_groups + 1, device=p.x.device)
            scores.scatter_add_(1, torch.where(lab >= 0, lab, groups.n_groups), flat)
            scores = scores[:, :-1]
        else:
            assert masks is not None
            scores = flat @ masks.float().T
        return Features(scores=scores, labels=labels, masks=masks)
    if spec == "pixels":
        if not p.is_image:
            raise OptionError(f"features='pixels' needs images (N, C, H, W), got inputs {tuple(p.x.shape)}")
        c, hw = p.x.shape[1], int(p.x[0, 0].numel())
        labels = torch.arange(hw, device=p.x.device).repeat(c).view(1, d)
        return Features(scores=p.values.sum(1).reshape(n, hw), labels=labels)
    if spec == "elements":
        return Features(scores=flat, labels=torch.arange(d, device=p.x.device).view(1, d))
    raise OptionError(f"features must be 'auto', 'pixels', 'elements' or a FeatureGroups, got {spec!r}")


def feature_count_steps(n_features: int, n_steps: int | None, step: int | None) -> torch.Tensor:
    """Cumulative numbers of features perturbed at each point of a curve, 0..n_features."""
    if step is not None:
        if isinstance(step, bool) or step < 1:
            raise OptionError(f"step must be a positive number of features, got {step!r}")
        k = math.ceil(n_features / step)
        return torch.clamp(torch.arange(k + 1) * step, max=n_features)
    if n_steps is None or isinstance(n_steps, bool) or n_steps < 1:
        raise OptionError(f"n_steps must be a positive int, got {n_steps!r}")
    k = min(int(n_steps), n_features)
    return torch.round(torch.arange(k + 1, dtype=torch.float64) * n_features / k).long()
