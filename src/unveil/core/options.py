"""Declared options: what a method takes, checked in one place.

Every registered method declares its options once, at registration (see
:func:`unveil.core.registry.register`): name, type, default, valid range and a one-line meaning,
and whether the option goes to the constructor (``where="init"``) or to the call
(``where="call"``). Options every method accepts (``target``, ``seed``, ``batch_size``,
``feature_names``, ``class_names``) and the shared ``background`` are declared here once, as
:data:`COMMON`. Everything that needs to know "which options does method X take?" — ``explain``,
the CLI's ``-o``, the dashboard, ``explain_dataset``, ``Explainer``, reports — asks the registry,
which answers from these declarations; nobody reads function signatures.

An unknown option or a value of the wrong type raises :class:`~unveil.errors.OptionError` naming
the valid options and the closest match.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch

from ..errors import OptionError

__all__ = [
    "COMMON",
    "ArrayLike",
    "Option",
    "OptionSet",
    "check_value",
    "suggest",
    "type_text",
]


class _ArrayLikeMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        if isinstance(obj, (torch.Tensor, np.ndarray, list, tuple)):
            return True
        return hasattr(obj, "__array__") or hasattr(obj, "to_numpy")


class ArrayLike(metaclass=_ArrayLikeMeta):
    """Type marker for options that take data: a tensor, an array, a list or a DataFrame."""


_NOTHING: Any = object()  # "no default": the option is required when it is used


@dataclass(frozen=True)
class Option:
    """One option of a method.

    Parameters
    ----------
    name
        The keyword.
    type
        A typing annotation the value must match: ``int``, ``float``, ``bool``, ``str``,
        ``Literal[...]``, unions (``int | None``), ``ArrayLike``, ``Callable``, ``Sequence``,
        ``Mapping``, a class, or ``Any``.
    default
        The value used when the option is not given.
    meaning
        One line for ``uv.options`` and the CLI.
    low, high
        Inclusive bounds for numbers (``None``: unbounded).
    where
        ``"init"`` for constructor options, ``"call"`` for options of the call.
    """

    name: str
    type: Any
    default: Any = None
    meaning: str = ""
    low: float | None = None
    high: float | None = None
    where: Literal["init", "call"] = "init"

    def check(self, value: Any, *, method: str = "") -> None:
        """Raise :class:`OptionError` when ``value`` does not fit this option.

        >>> n_steps = Option("n_steps", int, 50, "points on the path", low=1)
        >>> n_steps.check(32)  # fits: nothing happens
        >>> n_steps.check(0)
        Traceback (most recent call last):
            ...
        unveil.errors.OptionError: option n_steps=0 is outside >= 1
        >>> n_steps.check(2.5)
        Traceback (most recent call last):
            ...
        unveil.errors.OptionError: option n_steps=2.5 should be int (points on the path)
        """
        who = f"{method!r}: " if method else ""
        if not check_value(value, self.type):
            raise OptionError(
                f"{who}option {self.name}={_short(value)} should be {type_text(self.type)}"
                + (f" ({self.meaning})" if self.meaning else "")
            )
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            v = float(value)
            if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                raise OptionError(f"{who}option {self.name}={value!r} is outside {self.range_text()}")

    def range_text(self) -> str:
        """``[low, high]`` in words, or ``""`` when unbounded."""
        if self.low is None and self.high is None:
            return ""
        if self.high is None:
            return f">= {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"[{self.low:g}, {self.high:g}]"

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe description."""
        default = self.default
        if not isinstance(default, (str, int, float, bool)) and default is not None:
            default = repr(default)
        return {"name": self.name, "type": type_text(self.type), "default": default,
                "meaning": self.meaning, "range": self.range_text(), "where": self.where}


#: Options every method accepts (``background`` only where the method declares it).
COMMON: dict[str, Option] = {
    o.name: o
    for o in (
        Option("target", Union[int, str, ArrayLike, None], "predicted",
               "the class explained per row: an int, one per row, 'predicted', or None for a "
               "model with one output", where="call"),
        Option("seed", Union[int, None], None,
               "seed of the random draws (same seed, same answer); ignored by deterministic "
               "methods", low=0, where="call"),
        Option("batch_size", Union[int, Literal["auto"]], "auto",
               "rows per model evaluation chunk; 'auto' times a short probe", low=1),
        Option("feature_names", Union[Sequence, None], None,  # type: ignore[type-arg]  # any items
               "names of the input features (columns), kept on the Explanation", where="call"),
        Option("class_names", Union[Sequence, None], None,  # type: ignore[type-arg]  # any items
               "names of the model's classes, kept on the Explanation", where="call"),
        Option("background", Union[ArrayLike, None], None,
               "reference rows (M, ...) the method averages over", where="call"),
    )
}

#: Common options every method takes, whatever it declares.
UNIVERSAL = ("target", "seed", "batch_size", "feature_names", "class_names")


class OptionSet:
    """The options one method takes: its own declarations plus the common ones it uses."""

    def __init__(self, method: str, own: Iterable[Option], common: Iterable[str] = ()) -> None:
        self.method = method
        opts: dict[str, Option] = {}
        for name in (*UNIVERSAL, *common):
            if name not in COMMON:
                raise ValueError(f"{method!r}: no common option named {name!r}")
            opts[name] = COMMON[name]
        for o in own:
            if o.name in opts and o.name not in COMMON:
                raise ValueError(f"{method!r}: option {o.name!r} is declared twice")
            opts[o.name] = o  # a method may refine a common option (e.g. its own default)
        self.by_name = opts

    def __repr__(self) -> str:
        return f"OptionSet({self.method!r}: {', '.join(self.by_name)})"

    def __iter__(self) -> typing.Iterator[Option]:
        return iter(self.by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> Option:
        return self.by_name[name]

    def names(self, where: str | None = None) -> list[str]:
        """Option names, optionally only those of ``"init"`` or ``"call"``."""
        return [o.name for o in self if where is None or o.where == where]

    def check(self, options: Mapping[str, Any]) -> None:
        """Raise :class:`OptionError` for an unknown option or an ill-typed value."""
        for key, value in options.items():
            opt = self.by_name.get(key)
            if opt is None:
                raise OptionError(self.unknown_message(key))
            opt.check(value, method=self.method)

    def unknown_message(self, key: str) -> str:
        """``'x' takes no option 'y'; did you mean 'z'? Valid options: ...``."""
        return (f"{self.method!r} takes no option {key!r}.{suggest(key, self.by_name)} Valid "
                f"options: {', '.join(sorted(self.by_name))} (uv.options({self.method!r}) "
                "says what each means)")

    def split(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check ``options`` and split them into constructor and call options."""
        self.check(options)
        init = {k: v for k, v in options.items() if self.by_name[k].where == "init"}
        call = {k: v for k, v in options.items() if self.by_name[k].where == "call"}
        return init, call


def suggest(key: str, names: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest name, or ``""``."""
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


# -- runtime type checks --------------------------------------------------------------------
def check_value(value: Any, tp: Any) -> bool:
    """Whether ``value`` matches the annotation ``tp`` (shallow: containers' items unchecked)."""
    if tp is Any:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return any(check_value(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(tp))
    if origin is not None:
        tp = origin
    if tp is bool:
        return isinstance(value, (bool, np.bool_))
    if tp is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if tp is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_))
    if tp is Callable or tp is typing.Callable:
        return callable(value)
    if tp is Sequence:
        return isinstance(value, Sequence) and not isinstance(value, str) or isinstance(
            value, np.ndarray)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation this checker does not know: accept


def type_text(tp: Any) -> str:
    """A short human form of an annotation: ``int | 'auto'``."""
    if tp is Any:
        return "any value"
    if tp is None or tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_text(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is ArrayLike:
        return "array-like"
    if origin is not None:
        tp = origin
    if tp is Callable or tp is typing.Callable:
        return "a function"
    if tp is Sequence:
        return "a sequence"
    if tp is Mapping or tp is dict:
        return "a dict"
    return getattr(tp, "__name__", repr(tp))


def _short(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"<{type(value).__name__} shape={tuple(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
