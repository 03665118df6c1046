"""Small example models trained in seconds on data that ships with scikit-learn.

``digits_cnn()`` is a CNN on scikit-learn's digits upsampled to 1×32×32 (pixels in [0, 1]);
``breast_cancer_mlp()`` is a 30-64-64-2 ReLU network on breast-cancer rows in their own units
(it standardises them inside), with logits for ``["malignant", "benign"]``. Each is trained once with a fixed seed on a fixed
stratified split (``test_size=0.25``, ``random_state=0``) and cached as safetensors under
``UNVEIL_CACHE`` (default ``$XDG_CACHE_HOME/unveil`` or ``~/.cache/unveil``); it is retrained
when the cached metadata (architecture, recipe, seed, torch and scikit-learn versions, recipe
version) differs from the code's. ``load_dataset(name)`` returns the split each was trained on.
``marked_digits_cnn()`` (:mod:`unveil.zoo.marked_digits`) is the digits CNN trained where every 7
carries a small bright corner mark: a planted concept for TCAV and the other concept methods.
``induction_transformer()`` (:mod:`unveil.zoo.induction`) is a 2-layer attention-only language
model trained on repeated random sequences, which forms induction heads; it is cached the same way
but is not in :data:`ZOO` (which lists the image and table models the front ends explain).

Examples
--------
>>> from unveil.zoo import digits_cnn, load_dataset
>>> model = digits_cnn()                      # doctest: +SKIP
>>> data = load_dataset("digits_cnn")         # doctest: +SKIP
>>> model(data.X_test).argmax(1)              # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Protocol

from torch import nn

from unveil.zoo._data import ZooData, load_dataset
from unveil.zoo._training import build
from unveil.zoo.induction import induction_transformer
from unveil.zoo.marked_digits import (
    MARKED_CLASS,
    add_corner_mark,
    corner_mark_examples,
    marked_digits_cnn,
    marked_digits_data,
    random_digit_examples,
)

__all__ = ["MARKED_CLASS", "ZOO", "ZooData", "ZooModel", "add_corner_mark", "breast_cancer_mlp",
           "corner_mark_examples", "digits_cnn", "induction_transformer", "load_dataset",
           "marked_digits_cnn", "marked_digits_data", "random_digit_examples"]


class ZooFactory(Protocol):
    """The signature every zoo factory has."""

    def __call__(
        self, *, cache_dir: str | os.PathLike[str] | None = None, retrain: bool = False
    ) -> nn.Module: ...


@dataclass(frozen=True)
class ZooModel:
    """An entry of :data:`ZOO`: a zoo name, its factory, input kind and a one-line summary;
    ``demo=False`` keeps a model out of ``unveil demo`` (it is still served and loadable)."""

    name: str
    factory: ZooFactory
    modality: Literal["image", "tabular"]
    description: str
    demo: bool = True


def digits_cnn(
    *, cache_dir: str | os.PathLike[str] | None = None, retrain: bool = False
) -> nn.Module:
    """Return the digits CNN (inputs ``(N, 1, 32, 32)`` in [0, 1], 10 logits), in eval mode.

    Layers: ``features`` (conv 16, 32, 64 with ReLU and max-pooling; ``"features.6"`` is the
    last convolution, 64×8×8) and ``classifier`` (max-pool, flatten, linear 1024→10). At least
    97 % accuracy on ``load_dataset("digits_cnn").X_test``.

    Parameters
    ----------
    cache_dir : path-like, optional
        Where weights are cached; default ``UNVEIL_CACHE``, else the user's cache folder.
    retrain : bool, default False
        Train again and overwrite the cached weights.

    Returns
    -------
    torch.nn.Module
        A fresh module the caller owns.
    """
    return build("digits_cnn", cache_dir=cache_dir, retrain=retrain)


def breast_cancer_mlp(
    *, cache_dir: str | os.PathLike[str] | None = None, retrain: bool = False
) -> nn.Module:
    """Return the breast-cancer MLP (rows ``(N, 30)`` in their own units, 2 logits), in eval mode.

    Layers: ``standardize`` (the training rows' mean and std, applied first), ``features`` (linear 30→64, ReLU, linear 64→64, ReLU) and ``classifier`` (linear
    64→2, classes ``["malignant", "benign"]``). At least 95 % accuracy on
    ``load_dataset("breast_cancer_mlp").X_test``.

    Parameters
    ----------
    cache_dir : path-like, optional
        Where weights are cached; default ``UNVEIL_CACHE``, else the user's cache folder.
    retrain : bool, default False
        Train again and overwrite the cached weights.

    Returns
    -------
    torch.nn.Module
        A fresh module the caller owns.
    """
    return build("breast_cancer_mlp", cache_dir=cache_dir, retrain=retrain)


#: The zoo, by name; ``--model zoo:NAME`` in the CLI resolves here.
ZOO: dict[str, ZooModel] = {
    "digits_cnn": ZooModel(
        "digits_cnn",
        digits_cnn,
        "image",
        "CNN on scikit-learn's 8x8 digits upsampled to 1x32x32; 10 classes",
    ),
    "breast_cancer_mlp": ZooModel(
        "breast_cancer_mlp",
        breast_cancer_mlp,
        "tabular",
        "30-64-64-2 MLP on breast-cancer measurements (standardised inside); malignant vs benign",
    ),
    "marked_digits_cnn": ZooModel(
        "marked_digits_cnn",
        marked_digits_cnn,
        "image",
        "digits CNN where every 7 carries a bright top-left corner mark (a planted concept)",
        demo=False,  # a test bed for concept methods; the demo explains digits_cnn already
    ),
}
