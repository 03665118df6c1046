"""Guess the kind of data a batch holds, from its dtype and rank."""

from __future__ import annotations

import torch

__all__ = ["infer_modality"]


def infer_modality(x: torch.Tensor) -> str:
    """``"text"`` for integer ids, ``"image"`` for (N, C, H, W), ``"tabular"`` for (N, F),
    ``"sequence"`` otherwise (e.g. (N, C, L) signals)."""
    if not x.is_floating_point():
        return "text"
    if x.ndim == 4:
        return "image"
    if x.ndim == 2:
        return "tabular"
    return "sequence"
