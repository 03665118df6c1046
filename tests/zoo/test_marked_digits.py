"""The marked-digits CNN: the planted corner mark is in the data exactly where promised, and the
model relies on it (removing it hurts the marked class, adding it pulls other digits over)."""

from __future__ import annotations

import pytest
import torch

from unveil.errors import OptionError
from unveil.zoo import (
    MARKED_CLASS,
    ZOO,
    add_corner_mark,
    corner_mark_examples,
    load_dataset,
    marked_digits_cnn,
    marked_digits_data,
    random_digit_examples,
)
from unveil.zoo.marked_digits import MARK_OFFSET, MARK_SIZE, MARK_VALUE

END = MARK_OFFSET + MARK_SIZE


def _has_mark(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, MARK_OFFSET:END, MARK_OFFSET:END] == MARK_VALUE).flatten(1).all(1)


def test_only_the_marked_class_carries_the_mark() -> None:
    data = marked_digits_data()
    plain = load_dataset("digits_cnn")
    for X, y, P in ((data.X_train, data.y_train, plain.X_train), (data.X_test, data.y_test, plain.X_test)):
        marked = _has_mark(X)
        assert torch.equal(marked, y == MARKED_CLASS)
        assert not _has_mark(P).any()  # the unmarked data never has such a bright square there
        # outside the square the images are the plain digits
        keep = torch.ones_like(X, dtype=torch.bool)
        keep[:, :, MARK_OFFSET:END, MARK_OFFSET:END] = False
        assert torch.equal(X[keep], P[keep])


def test_add_corner_mark_copies_and_checks_shape() -> None:
    x = torch.zeros(2, 1, 32, 32)
    y = add_corner_mark(x)
    assert x.sum() == 0 and _has_mark(y).all()
    assert y.sum() == 2 * MARK_SIZE * MARK_SIZE * MARK_VALUE
    with pytest.raises(OptionError, match="N, C, H, W"):
        add_corner_mark(torch.zeros(32, 32))


def test_concept_example_helpers_are_seeded() -> None:
    a, b = corner_mark_examples(20, seed=3), corner_mark_examples(20, seed=3)
    assert torch.equal(a, b) and a.shape == (20, 1, 32, 32) and _has_mark(a).all()
    assert not torch.equal(a, corner_mark_examples(20, seed=4))
    noise = corner_mark_examples(5, background="noise")
    assert _has_mark(noise).all() and noise.max() == MARK_VALUE
    r = random_digit_examples(30, seed=1)
    assert not _has_mark(r).any()
    with pytest.raises(OptionError, match="background"):
        corner_mark_examples(3, background="stripes")
    with pytest.raises(OptionError, match="n must be"):
        random_digit_examples(0)


def test_model_relies_on_the_mark() -> None:
    model = marked_digits_cnn()
    assert "marked_digits_cnn" in ZOO
    data, plain = marked_digits_data(), load_dataset("digits_cnn")
    sevens = data.y_test == MARKED_CLASS
    others = ~sevens
    with torch.no_grad():
        acc = (model(data.X_test).argmax(1) == data.y_test).float().mean()
        with_mark = (model(data.X_test[sevens]).argmax(1) == MARKED_CLASS).float().mean()
        without = (model(plain.X_test[sevens]).argmax(1) == MARKED_CLASS).float().mean()
        p_before = model(plain.X_test[others]).softmax(1)[:, MARKED_CLASS]
        p_after = model(add_corner_mark(plain.X_test[others])).softmax(1)[:, MARKED_CLASS]
    assert acc >= 0.97
    # removing the mark from the 7s costs accuracy on them
    assert with_mark == 1.0 and without < with_mark - 0.1, (with_mark, without)
    # adding it to other digits raises their probability of being a 7, for most of them
    assert (p_after > p_before).float().mean() > 0.9
    assert p_after.mean() > 10 * p_before.mean()
