"""Data sets of the zoo: scikit-learn's bundled data, split and preprocessed the same way each time.

Both data sets ship with scikit-learn, so nothing is downloaded. The split is stratified, with
``test_size=0.25`` and ``random_state=0``. Rows stay in their own units: a table model's
standardisation is a layer inside it, fitted on the training rows only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from unveil.errors import OptionError

__all__ = ["DATA_RECIPES", "ZooData", "load_dataset", "split_indices"]

TEST_SIZE = 0.25
SPLIT_RANDOM_STATE = 0
DIGITS_SIZE = 32

#: How each zoo model's data is made; part of the cache metadata, so a change here retrains.
DATA_RECIPES: dict[str, dict[str, object]] = {
    "digits_cnn": {
        "source": "sklearn.datasets.load_digits",
        "scale": "pixels / 16 -> [0, 1]",
        "resize": f"bilinear 8x8 -> {DIGITS_SIZE}x{DIGITS_SIZE}, align_corners=False",
        "shape": [1, DIGITS_SIZE, DIGITS_SIZE],
        "split": {"test_size": TEST_SIZE, "random_state": SPLIT_RANDOM_STATE, "stratify": True},
    },
    "marked_digits_cnn": {
        "source": "sklearn.datasets.load_digits",
        "scale": "pixels / 16 -> [0, 1]",
        "resize": f"bilinear 8x8 -> {DIGITS_SIZE}x{DIGITS_SIZE}, align_corners=False",
        "shape": [1, DIGITS_SIZE, DIGITS_SIZE],
        "split": {"test_size": TEST_SIZE, "random_state": SPLIT_RANDOM_STATE, "stratify": True},
        "mark": "class 7: pixels [1:5, 1:5] set to 1.0, train and test; no other class marked",
    },
    "breast_cancer_mlp": {
        "source": "sklearn.datasets.load_breast_cancer",
        "scale": "rows in their own units; the model standardises them inside (training rows' "
                 "mean and population std)",
        "shape": [30],
        "split": {"test_size": TEST_SIZE, "random_state": SPLIT_RANDOM_STATE, "stratify": True},
    },
}


@dataclass(frozen=True)
class ZooData:
    """A fixed train/test split of a zoo data set, ready for its zoo model.

    Attributes
    ----------
    X_train, X_test : torch.Tensor
        float32 inputs in the data set's own units, shaped ``(N, 1, 32, 32)`` for images (pixels
        in [0, 1]) or ``(N, F)`` for tables (as measured: the zoo's table models standardise
        inside).
    y_train, y_test : torch.Tensor
        int64 class indices, shaped ``(N,)``.
    class_names : list of str
        Name of each class index, in the order of the model's outputs.
    feature_names : list of str or None
        Column names for tabular data, ``None`` for images.
    modality : {"image", "tabular"}
        The kind of input.
    """

    X_train: torch.Tensor
    X_test: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    feature_names: list[str] | None
    modality: Literal["image", "tabular"]


def split_indices(y: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Return the train and test row indices of the zoo's fixed stratified split of ``y``."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y), dtype=np.int64)
    train, test = train_test_split(
        rows, test_size=TEST_SIZE, random_state=SPLIT_RANDOM_STATE, stratify=y
    )
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _digits() -> ZooData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    y = np.asarray(bunch.target, dtype=np.int64)
    small = torch.as_tensor(np.asarray(bunch.data, dtype=np.float32)).reshape(-1, 1, 8, 8) / 16.0
    images = F.interpolate(
        small, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False
    ).contiguous()
    train, test = split_indices(y)
    labels = torch.as_tensor(y)
    return ZooData(
        X_train=images[torch.as_tensor(train)],
        X_test=images[torch.as_tensor(test)],
        y_train=labels[torch.as_tensor(train)],
        y_test=labels[torch.as_tensor(test)],
        class_names=[str(name) for name in bunch.target_names],
        feature_names=None,
        modality="image",
    )


def _breast_cancer() -> ZooData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = split_indices(y)
    Z = torch.as_tensor(X.astype(np.float32))
    labels = torch.as_tensor(y)
    return ZooData(
        X_train=Z[torch.as_tensor(train)],
        X_test=Z[torch.as_tensor(test)],
        y_train=labels[torch.as_tensor(train)],
        y_test=labels[torch.as_tensor(test)],
        class_names=[str(name) for name in bunch.target_names],
        feature_names=[str(name) for name in bunch.feature_names],
        modality="tabular",
    )


def _marked_digits() -> ZooData:
    from unveil.zoo.marked_digits import marked_data

    return marked_data()


_BUILDERS: dict[str, Callable[[], ZooData]] = {
    "digits_cnn": _digits,
    "marked_digits_cnn": _marked_digits,
    "breast_cancer_mlp": _breast_cancer,
}


@functools.cache
def _prepared(name: str) -> ZooData:
    with torch.inference_mode(False):
        return _BUILDERS[name]()


def load_dataset(name: str) -> ZooData:
    """Load the fixed train/test split a zoo model was trained and tested on.

    Parameters
    ----------
    name : str
        A zoo name: ``"digits_cnn"``, ``"marked_digits_cnn"`` or ``"breast_cancer_mlp"``.

    Returns
    -------
    ZooData
        Fresh tensors (safe to modify); the split is the same on every call.

    Raises
    ------
    OptionError
        If ``name`` is not a zoo name.
    """
    if name not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS))
        raise OptionError(f"unknown zoo data set {name!r}; known names: {known}")
    data = _prepared(name)
    with torch.inference_mode(False):
        return ZooData(
            X_train=data.X_train.clone(),
            X_test=data.X_test.clone(),
            y_train=data.y_train.clone(),
            y_test=data.y_test.clone(),
            class_names=list(data.class_names),
            feature_names=None if data.feature_names is None else list(data.feature_names),
            modality=data.modality,
        )
