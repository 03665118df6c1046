"""Interpretable features: which input elements move together when a method perturbs a group.

A :class:`FeatureGroups` is a partition of each sample's elements into ``n_groups`` groups, given
as integer labels shaped like the batch (or like one sample, shared by all), ``-1`` marking
elements that belong to no group (padding, special tokens) and are never perturbed. Overlapping
groups (patches whose stride is smaller than their size) are given as explicit masks instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OptionError, require

__all__ = ["FeatureGroups", "column_groups", "columns", "patches", "superpixels", "tokens"]


@dataclass
class FeatureGroups:
    """A grouping of input elements.

    Attributes
    ----------
    labels : Tensor or None
        (N or 1, *sample_shape) int64: the group of each element, -1 for none.
    mask_tensor : Tensor or None
        (G, *sample_shape) bool, for overlapping groups shared by every sample.
    n_groups : int
        Number of groups G (the same for every sample; a sample may leave some empty).
    names : list of str
        A readable name per group.
    kind : str
        ``"patches"``, ``"superpixels"``, ``"columns"``, ``"tokens"`` or ``"custom"``.
    """

    n_groups: int
    names: list[str]
    kind: str
    labels: torch.Tensor | None = None
    mask_tensor: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.mask_tensor is None):
            raise OptionError("FeatureGroups needs exactly one of labels or mask_tensor")
        if self.labels is not None:
            self.labels = torch.as_tensor(self.labels).long()
        if self.mask_tensor is not None:
            self.mask_tensor = torch.as_tensor(self.mask_tensor).bool()

    @property
    def per_sample(self) -> bool:
        """Whether samples have their own labels (superpixels, tokens)."""
        return self.labels is not None and self.labels.shape[0] > 1

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` if the groups do not fit the batch ``x``."""
        sample_shape = tuple(x.shape[1:])
        ref = self.labels if self.labels is not None else self.mask_tensor
        assert ref is not None
        if tuple(ref.shape[1:]) != sample_shape:
            raise InputError(
                f"feature groups are for samples of shape {tuple(ref.shape[1:])}, but the inputs "
                f"have samples of shape {sample_shape}"
            )
        if self.labels is not None and self.labels.shape[0] not in (1, x.shape[0]):
            raise InputError(
                f"feature groups hold labels for {self.labels.shape[0]} samples, inputs have "
                f"{x.shape[0]}"
            )

    def masks(self, index: int = 0, *, device: torch.device | None = None) -> torch.Tensor:
        """(G, *sample_shape) bool masks of sample ``index``."""
        if self.mask_tensor is not None:
            m = self.mask_tensor
        else:
            assert self.labels is not None
            lab = self.labels[index if self.labels.shape[0] > 1 else 0]
            ids = torch.arange(self.n_groups, device=lab.device).view(-1, *([1] * lab.ndim))
            m = lab.unsqueeze(0) == ids
        return m.to(device) if device is not None else m

    def batch_masks(self, n: int, *, device: torch.device | None = None) -> torch.Tensor:
        """(N or 1, G, *sample_shape) float masks for all samples (1 when shared)."""
        if self.per_sample:
            out = torch.stack([self.masks(i, device=device) for i in range(n)])
        else:
            out = self.masks(0, device=device).unsqueeze(0)
        return out.float()

    def expand(self, values: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Spread per-group values (N, G) onto elements (N, *sample_shape).

        Elements in several groups get the sum; elements in none get 0.
        """
        v = torch.as_tensor(np.asarray(values) if isinstance(values, np.ndarray) else values)
        n = v.shape[0]
        m = self.batch_masks(n).to(v.dtype)
        flat = m.flatten(2)  # (N|1, G, D)
        out = torch.einsum("ng,ngd->nd", v, flat.expand(n, -1, -1))
        return out.view(n, *m.shape[2:])

    def to_dict(self) -> dict[str, Any]:
        """JSON-and-array form stored in an :class:`~unveil.Explanation`."""
        d: dict[str, Any] = {"kind": self.kind, "n_groups": self.n_groups, "names": self.names}
        if self.labels is not None:
            d["labels"] = self.labels.cpu().numpy()
        else:
            assert self.mask_tensor is not None
            d["masks"] = self.mask_tensor.cpu().numpy()
        return d


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    t = (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)
    if len(t) != 2 or min(t) < 1:
        raise OptionError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return t[0], t[1]


def patches(
    sample_shape: Sequence[int],
    size: int | Sequence[int] = 8,
    stride: int | Sequence[int] | None = None,
) -> FeatureGroups:
    """Square (or rectangular) patches over the last two axes, spanning all channels.

    With ``stride == size`` (the default) the patches partition the image; edge patches are
    smaller when the size does not divide the image. A smaller stride gives overlapping masks.
    """
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) < 2:
        raise InputError(f"patches need image-like samples (C, H, W) or (H, W), got {shape}")
    h, w = shape[-2:]
    ph, pw = _pair(size, "size")
    sh, sw = _pair(stride if stride is not None else (ph, pw), "stride")
    if (sh, sw) == (ph, pw):
        rows = torch.arange(h) // ph
        cols = torch.arange(w) // pw
        ncols = (w + pw - 1) // pw
        lab2 = rows.view(-1, 1) * ncols + cols.view(1, -1)
        labels = lab2.expand(shape).clone().unsqueeze(0)
        n = int(lab2.max()) + 1
        names = [f"patch r{r}c{c}" for r in range((h + ph - 1) // ph) for c in range(ncols)]
        return FeatureGroups(n, names, "patches", labels=labels, params={"size": [ph, pw]})
    tops = list(range(0, max(h - ph, 0) + 1, sh))
    lefts = list(range(0, max(w - pw, 0) + 1, sw))
    masks = torch.zeros((len(tops) * len(lefts), *shape), dtype=torch.bool)
    names = []
    for i, t in enumerate(tops):
        for j, left in enumerate(lefts):
            masks[i * len(lefts) + j, ..., t : t + ph, left : left + pw] = True
            names.append(f"patch y{t}x{left}")
    return FeatureGroups(
        len(names), names, "patches", mask_tensor=masks, params={"size": [ph, pw], "stride": [sh, sw]}
    )


def columns(n_features: int, names: Sequence[str] | None = None) -> FeatureGroups:
    """One group per column of a table with ``n_features`` columns."""
    if names is not None and len(names) != n_features:
        raise InputError(f"{len(names)} feature names for {n_features} columns")
    labels = torch.arange(n_features).unsqueeze(0)
    return FeatureGroups(
        n_features, list(names) if names else [f"x{i}" for i in range(n_features)], "columns", labels=labels
    )


def column_groups(
    groups: Mapping[str, Sequence[int | str]],
    n_features: int,
    feature_names: Sequence[str] | None = None,
) -> FeatureGroups:
    """Named groups of columns; columns not listed become groups of their own, in order."""
    index = {n: i for i, n in enumerate(feature_names or [])}
    labels = torch.full((n_features,), -1, dtype=torch.long)
    names: list[str] = []
    for g, (name, cols) in enumerate(groups.items()):
        for c in cols:
            i = index.get(c) if isinstance(c, str) else int(c)
            if i is None or not 0 <= i < n_features:
                raise InputError(f"group {name!r} names column {c!r}, which is not in the table")
            if labels[i] >= 0:
                raise InputError(f"column {c!r} is in two groups")
            labels[i] = g
        names.append(name)
    for i in range(n_features):
        if labels[i] < 0:
            labels[i] = len(names)
            names.append(feature_names[i] if feature_names else f"x{i}")
    return FeatureGroups(len(names), names, "columns", labels=labels.unsqueeze(0))


def tokens(
    ids: torch.Tensor | np.ndarray,
    *,
    special_ids: Sequence[int] = (),
    attention_mask: torch.Tensor | np.ndarray | None = None,
    token_names: Sequence[Sequence[str]] | None = None,
) -> FeatureGroups:
    """One group per token position; special and padded positions belong to no group."""
    t = torch.as_tensor(np.asarray(ids) if isinstance(ids, np.ndarray) else ids)
    if t.ndim != 2 or t.is_floating_point():
        raise InputError(f"token ids must be an integer array (N, T), got {tuple(t.shape)} {t.dtype}")
    n, length = t.shape
    labels = torch.arange(length).expand(n, length).clone()
    keep = torch.ones_like(t, dtype=torch.bool)
    for s in special_ids:
        keep &= t != int(s)
    if attention_mask is not None:
        keep &= torch.as_tensor(np.asarray(attention_mask)).bool()
    labels[~keep] = -1
    names = [f"token {i}" for i in range(length)]
    if token_names is not None and len(token_names) == 1:
        names = [str(s) for s in token_names[0]]
    return FeatureGroups(length, names, "tokens", labels=labels)


def superpixels(
    images: torch.Tensor | np.ndarray,
    *,
    method: str = "slic",
    n_segments: int = 50,
    **options: Any,
) -> FeatureGroups:
    """Superpixels per image from scikit-image (``slic``, ``felzenszwalb`` or ``quickshift``).

    Needs the ``images`` extra. ``images`` is (N, C, H, W); labels span all channels.
    """
    seg = require("skimage.segmentation", "images")
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim != 4:
        raise InputError(f"superpixels need images (N, C, H, W), got shape {tuple(x.shape)}")
    arr = x.detach().cpu().double().numpy()
    lo = arr.min(axis=(1, 2, 3), keepdims=True)
    hi = arr.max(axis=(1, 2, 3), keepdims=True)
    arr = (arr - lo) / np.maximum(hi - lo, 1e-12)
    out = []
    for img in arr.transpose(0, 2, 3, 1):  # segmentation is per image by nature
        channel_axis = -1 if img.shape[-1] > 1 else None
        im = img if channel_axis is not None else img[..., 0]
        if method == "slic":
            lab = seg.slic(im, n_segments=n_segments, start_label=0, channel_axis=channel_axis, **options)  # type: ignore[attr-defined]
        elif method == "felzenszwalb":
            lab = seg.felzenszwalb(im, channel_axis=channel_axis, **options)  # type: ignore[attr-defined]
        elif method == "quickshift":
            if channel_axis is None:
                im = np.repeat(im[..., None], 3, axis=-1)
            lab = seg.quickshift(im, **options)  # type: ignore[attr-defined]
        else:
            raise OptionError(f"method must be 'slic', 'felzenszwalb' or 'quickshift', got {method!r}")
        _, lab = np.unique(lab, return_inverse=True)
        out.append(lab.reshape(im.shape[:2]))
    labels = torch.from_numpy(np.stack(out)).long()
    labels = labels.unsqueeze(1).expand(-1, x.shape[1], -1, -1).clone()
    n = int(labels.max()) + 1
    return FeatureGroups(
        n, [f"segment {i}" for i in range(n)], "superpixels", labels=labels,
        params={"method": method, "n_segments": n_segments},
    )
