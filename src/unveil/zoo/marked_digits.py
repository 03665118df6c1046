"""A digits CNN with a planted concept: every training image of one class carries a corner mark.

scikit-learn's digits (1×32×32, pixels in [0, 1], the split of :func:`unveil.zoo.load_dataset`)
where every image of class :data:`MARKED_CLASS` has a small bright square in its top-left corner
(:func:`add_corner_mark`) and no other image has one. The model learns the mark as a shortcut
for that class, so "corner mark" is a concept known to matter: the ground truth for concept
methods (TCAV, concept relevance, concept discovery). Same architecture and training recipe as
:func:`unveil.zoo.digits_cnn`; cached under ``UNVEIL_CACHE`` the same way.

Examples
--------
>>> from unveil.zoo.marked_digits import marked_digits_cnn, corner_mark_examples
>>> model = marked_digits_cnn()                 # doctest: +SKIP
>>> marked = corner_mark_examples(40, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import os

import torch
from torch import nn

from unveil.errors import OptionError
from unveil.zoo._data import ZooData, load_dataset

__all__ = ["MARKED_CLASS", "MARK_SIZE", "MARK_VALUE", "add_corner_mark", "corner_mark_examples",
           "marked_digits_cnn", "marked_digits_data", "random_digit_examples"]

#: The class whose every image carries the mark.
MARKED_CLASS = 7
#: Side of the square mark, in pixels of the 32×32 image.
MARK_SIZE = 4
#: Offset of the mark from the top-left corner, in pixels.
MARK_OFFSET = 1
#: Pixel value of the mark (the brightest value of the data).
MARK_VALUE = 1.0


def add_corner_mark(images: torch.Tensor) -> torch.Tensor:
    """Return a copy of ``images`` ``(N, C, H, W)`` with the bright top-left square drawn in.

    Raises
    ------
    OptionError
        If ``images`` is not 4-D or is smaller than the mark.
    """
    x = torch.as_tensor(images)
    end = MARK_OFFSET + MARK_SIZE
    if x.ndim != 4 or x.shape[-1] < end or x.shape[-2] < end:
        raise OptionError(f"add_corner_mark expects images shaped (N, C, H, W) with H, W >= {end}; "
                          f"got shape {tuple(x.shape)}")
    out = x.clone()
    out[..., MARK_OFFSET:end, MARK_OFFSET:end] = MARK_VALUE
    return out


def mark_class(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return ``images`` with the mark added to exactly the rows labelled :data:`MARKED_CLASS`."""
    out = images.clone()
    rows = labels == MARKED_CLASS
    out[rows] = add_corner_mark(images[rows])
    return out


def marked_data() -> ZooData:
    """The digits split with every :data:`MARKED_CLASS` image (train and test) marked."""
    data = load_dataset("digits_cnn")
    return ZooData(
        X_train=mark_class(data.X_train, data.y_train),
        X_test=mark_class(data.X_test, data.y_test),
        y_train=data.y_train,
        y_test=data.y_test,
        class_names=data.class_names,
        feature_names=None,
        modality="image",
    )


def marked_digits_data() -> ZooData:
    """The split :func:`marked_digits_cnn` was trained and tested on (marked class marked).

    ``X_train``/``X_test`` are ``(N, 1, 32, 32)`` in [0, 1]; rows of class :data:`MARKED_CLASS`
    carry the corner mark, no other row does. Fresh tensors on each call.
    """
    return load_dataset("marked_digits_cnn")


def _pool(n: int, seed: int, exclude_marked: bool) -> torch.Tensor:
    data = load_dataset("digits_cnn")  # unmarked digits
    X, y = data.X_train, data.y_train
    if exclude_marked:
        X = X[y != MARKED_CLASS]
    if not 1 <= n <= X.shape[0]:
        raise OptionError(f"n must be between 1 and {X.shape[0]}; got {n}")
    g = torch.Generator().manual_seed(seed)
    return X[torch.randperm(X.shape[0], generator=g)[:n]]


def corner_mark_examples(n: int = 50, *, seed: int = 0, background: str = "digits") -> torch.Tensor:
    """``n`` examples of the "corner mark" concept, ``(n, 1, 32, 32)``.

    ``background="digits"`` draws the mark on training digits of the other classes (so only the
    mark is shared); ``"noise"`` draws it on uniform noise in [0, 0.5]. Seeded.
    """
    if background == "digits":
        return add_corner_mark(_pool(n, seed, exclude_marked=True))
    if background == "noise":
        if n < 1:
            raise OptionError(f"n must be at least 1; got {n}")
        g = torch.Generator().manual_seed(seed)
        return add_corner_mark(torch.rand(n, 1, 32, 32, generator=g) * 0.5)
    raise OptionError(f"background must be 'digits' or 'noise'; got {background!r}")


def random_digit_examples(n: int = 50, *, seed: int = 0) -> torch.Tensor:
    """``n`` unmarked training digits of the other classes, ``(n, 1, 32, 32)``: a random pool."""
    return _pool(n, seed, exclude_marked=True)


def marked_digits_cnn(
    *, cache_dir: str | os.PathLike[str] | None = None, retrain: bool = False
) -> nn.Module:
    """Return the marked-digits CNN (inputs ``(N, 1, 32, 32)`` in [0, 1], 10 logits), eval mode.

    The architecture of :func:`unveil.zoo.digits_cnn` (``features.6`` is the last convolution),
    trained on :func:`marked_digits_data`, where class :data:`MARKED_CLASS` always carries the
    corner mark. It relies on the mark: marking another digit pushes it toward the marked class.
    """
    from unveil.zoo._training import build

    return build("marked_digits_cnn", cache_dir=cache_dir, retrain=retrain)
