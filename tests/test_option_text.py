"""Command-line option values read by the type the method declares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Union

import pytest

from unveil.core.options import ArrayLike, Option
from unveil.errors import OptionError
from unveil.frontends.option_text import parse_value, read_option, split_item


@pytest.mark.parametrize("text,tp,expected", [
    ("32", int, 32),
    ("32", float, 32.0),
    ("0.5", Union[float, str], 0.5),
    ("zeros", Union[float, Literal["zeros", "blur"], ArrayLike, None], "zeros"),
    ("none", Union[str, None], None),
    ("null", Union[int, None], None),
    ("features.3", Union[str, None], "features.3"),
    ("3", str, "3"),  # a layer named "3" stays a name
    ('"quoted"', str, "quoted"),
    ("auto", Union[int, Literal["auto"]], "auto"),
    ("64", Union[int, Literal["auto"]], 64),
    ("true", bool, True),
    ("No", bool, False),
    ("[1, 3, 3]", Union[int, Sequence], [1, 3, 3]),
    ("[1, 2]", tuple, (1, 2)),
    ("2", Literal[1, 2], 2),
    ('{"a": 1}', Any, {"a": 1}),
])
def test_values_read_by_the_declared_type(text: str, tp: Any, expected: Any) -> None:
    got = parse_value(text, tp)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text,tp", [
    ("abc", int), ("1.5", int), ("maybe", bool), ("other", Literal["a", "b"]), ("x", type(None)),
    ("[1, 2", Sequence),
])
def test_values_that_do_not_fit_raise_value_error(text: str, tp: Any) -> None:
    with pytest.raises(ValueError):
        parse_value(text, tp)


def test_misfits_and_undeclared_options_are_guessed_for_the_declaration_to_refuse() -> None:
    n_steps = Option("n_steps", int, 50, low=1)
    assert read_option("abc", [n_steps]) == "abc"
    assert read_option("1.5", [n_steps]) == 1.5
    assert read_option("[1, 2]", []) == [1, 2] and read_option("text", []) == "text"
    # several declarations of one name (a budget option): the first that fits
    assert read_option("auto", [n_steps, Option("n_steps", Literal["auto"], "auto")]) == "auto"


def test_split_item() -> None:
    assert split_item("n_steps=32") == (None, "n_steps", "32")
    assert split_item("layer=features.3") == (None, "layer", "features.3")
    assert split_item("lime.n_samples=8", scoped=True) == ("lime", "n_samples", "8")
    assert split_item("layer=features.3", scoped=True) == (None, "layer", "features.3")
    with pytest.raises(OptionError, match="must look like name=value"):
        split_item("lime.n_samples=8")
    with pytest.raises(OptionError, match=r"must look like \[method.\]name=value"):
        split_item("n_steps", scoped=True)
