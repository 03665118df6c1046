"""Checking the training rows, the explained rows and their targets."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.model import to_tensor
from ..errors import InputError, TargetError

__all__ = ["check_rows", "check_targets", "split_train"]


def split_train(train: Any) -> tuple[Any, Any]:
    """``train=(X, y)`` (or a ``TensorDataset``) as its two parts."""
    tensors = getattr(train, "tensors", None)
    if tensors is not None and len(tensors) == 2:
        return tensors[0], tensors[1]
    if isinstance(train, (tuple, list)) and len(train) == 2:
        return train[0], train[1]
    raise InputError(
        f"train must be a pair (X, y) of the training rows and their targets, got {type(train).__name__}"
        f"{f' of length {len(train)}' if isinstance(train, (tuple, list)) else ''}"
    )


def check_rows(inputs: Any, targets: Any, *, what: str, model: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``inputs`` and ``targets`` as tensors with one target per row and finite values; float
    inputs in the dtype of ``model``'s parameters when a model is given (a float64 array for a
    float32 network, say)."""
    x = to_tensor(inputs, name=what)
    if targets is None:
        raise TargetError(f"{what} need their targets (the class or value each row's loss is measured against)")
    y = to_tensor(targets, name=f"the targets of {what}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"{what} must have at least one row, got shape {tuple(x.shape)}")
    if y.ndim == 0:
        y = y.reshape(1)
    if y.shape[0] != x.shape[0]:
        raise InputError(
            f"{what} have {x.shape[0]} rows but {y.shape[0]} targets; pass one target per row"
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = torch.nonzero(~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)).reshape(-1)[:8].tolist()
        raise InputError(f"{what} contain NaN or infinite values (rows {bad}); impute or drop them first")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise TargetError(f"the targets of {what} contain NaN or infinite values")
    if y.dtype == torch.bool:
        y = y.long()
    params = getattr(model, "parameters", None)
    if x.is_floating_point() and callable(params):
        first = next((p for p in params() if p.is_floating_point()), None)
        if first is not None and first.dtype != x.dtype:
            x = x.to(first.dtype)
    return x, y


def check_targets(y: torch.Tensor, loss_name: str, n_out: int, *, what: str) -> None:
    """Class targets within the model's outputs (``0 .. n_out-1``; 0/1 for one logit)."""
    if loss_name not in ("cross_entropy", "binary_cross_entropy"):
        return
    n_classes = 2 if loss_name == "binary_cross_entropy" else n_out
    if y.is_floating_point() and loss_name == "cross_entropy":
        raise TargetError(f"the targets of {what} must be integer class indices for classification, got floats")
    vals = y.detach().cpu().numpy()
    bad = np.flatnonzero((vals < 0) | (vals >= n_classes) | (vals != np.round(vals)))
    if bad.size:
        raise TargetError(
            f"the targets of {what} must be class indices 0..{n_classes - 1} (the model has {n_out} "
            f"output{'s' if n_out != 1 else ''}), got {vals[bad[0]]!r} at row {int(bad[0])}"
            f"{f' and {bad.size - 1} more' if bad.size > 1 else ''}"
        )
