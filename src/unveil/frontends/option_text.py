"""Options typed on a command line (``-o name=value``): read by the type the method declares.

``"32"`` becomes ``32`` for an ``int`` option and ``32.0`` for a ``float`` one; ``none`` /
``null`` is ``None`` where the option allows it; ``true`` / ``false`` (also ``yes``/``no``,
``on``/``off``, ``1``/``0``) for a ``bool``; a ``Literal`` takes one of its values; data
options (lists, arrays) take JSON (``[1, 3, 3]``). A value that does not read as the declared
type, and the value of an option the method does not declare, are read as JSON when they parse
and kept as text otherwise, so that the method's declaration refuses them with its own message.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Union

from ..core.options import Option, check_value
from ..errors import OptionError

__all__ = ["guess_value", "parse_value", "read_option", "split_item"]

_NULLS = ("none", "null")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def split_item(item: str, *, scoped: bool = False) -> tuple[str | None, str, str]:
    """``"name=value"`` -> ``(None, "name", "value")``; with ``scoped``, also
    ``"method.name=value"`` -> ``("method", "name", "value")``. Anything else raises
    :class:`OptionError`."""
    key, sep, val = item.partition("=")
    scope, dot, name = key.strip().partition(".") if scoped else ("", "", key.strip())
    if not dot:
        scope, name = "", key.strip()
    if not sep or not name.isidentifier() or (dot and not scope.isidentifier()):
        form = "[method.]name=value" if scoped else "name=value"
        raise OptionError(f"--option must look like {form}, got {item!r}")
    return scope or None, name, val


def guess_value(text: str) -> Any:
    """``text`` as JSON when it parses, else the text itself (for undeclared options)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_option(text: str, options: Iterable[Option]) -> Any:
    """``text`` read by the first of ``options`` (declarations of one option name) whose type
    it fits; guessed (:func:`guess_value`) when none fits or none is given."""
    for opt in options:
        try:
            return parse_value(text, opt.type)
        except ValueError:
            continue
    return guess_value(text)


def parse_value(text: str, tp: Any) -> Any:
    """``text`` as a value of the annotation ``tp``; :class:`ValueError` when it is not one."""
    s = text.strip()
    if tp is Any:
        return guess_value(s)
    if tp is None or tp is type(None):
        if s.lower() in _NULLS:
            return None
        raise ValueError(text)
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        for arm in sorted(typing.get_args(tp), key=_arm_order):
            try:
                return parse_value(text, arm)
            except ValueError:
                continue
        raise ValueError(text)
    if origin is Literal:
        return _literal(s, typing.get_args(tp))
    if tp is bool:
        if s.lower() in _TRUE or s.lower() in _FALSE:
            return s.lower() in _TRUE
        raise ValueError(text)
    if tp is int:
        return int(s)
    if tp is float:
        return float(s)
    if tp is str:
        return _unquote(text)
    value = json.loads(s)  # data and containers: JSON (JSONDecodeError is a ValueError)
    if isinstance(value, list) and (origin or tp) is tuple:
        value = tuple(value)
    if not check_value(value, tp):
        raise ValueError(text)
    return value


def _arm_order(arm: Any) -> int:
    """Try the narrow readings of a union first, plain text last."""
    if arm is None or arm is type(None):
        return 0
    if typing.get_origin(arm) is Literal:
        return 1
    order: dict[Any, int] = {bool: 2, int: 3, float: 4, str: 6}
    return order.get(arm, 5)


def _literal(s: str, values: Sequence[Any]) -> Any:
    plain = _unquote(s)
    for v in values:
        if isinstance(v, bool):
            if (v and s.lower() in _TRUE) or (not v and s.lower() in _FALSE):
                return v
        elif isinstance(v, (int, float)):
            try:
                if type(v)(s) == v:
                    return v
            except ValueError:
                continue
        elif v is None:
            if s.lower() in _NULLS:
                return None
        elif isinstance(v, str) and plain == v:
            return v
    raise ValueError(s)


def _unquote(text: str) -> str:
    """A JSON string literal (``"abc"``) without its quotes; other text as it is."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        try:
            out = json.loads(s)
        except json.JSONDecodeError:
            return text
        return out if isinstance(out, str) else text
    return text
