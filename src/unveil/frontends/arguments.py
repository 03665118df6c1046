"""Settings given as text (command-line arguments): row selections, targets, ``name=value``
options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.options import OptionSet
from ..errors import InputError, OptionError, TargetError
from .option_text import read_option, split_item
from .wording import PYTHON, Wording

__all__ = ["parse_option", "parse_rows", "parse_target"]


def parse_rows(spec: str, n: int, *, wording: Wording = PYTHON) -> list[int]:
    """``"a:b"`` (a slice) or ``"i,j,k"`` -> row indices, checked against ``n`` rows."""
    try:
        if ":" in spec:
            a, _, b = spec.partition(":")
            idx = list(range(n))[slice(int(a) if a else None, int(b) if b else None)]
        else:
            idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"{wording.name('rows')} must look like '0:8' or '1,4,9', got {spec!r}") from None
    bad = [i for i in idx if not -n <= i < n]
    if bad or not idx:
        raise InputError(f"{wording.name('rows')} {spec!r} selects no rows or rows out of range "
                         f"(there are {n})")
    return idx


def parse_target(spec: str | None, class_names: Sequence[str] | None, *,
                 wording: Wording = PYTHON) -> Any:
    """``predicted`` (default), an int, a class name, or comma-separated ints (one per row)."""
    if spec is None or spec == "predicted":
        return "predicted"
    if spec == "none":
        return None
    try:
        parts = [int(s) for s in spec.split(",")]
        return parts[0] if len(parts) == 1 else parts
    except ValueError:
        pass
    if class_names is not None and spec in class_names:
        return list(class_names).index(spec)
    known = f"; class names: {', '.join(class_names)}" if class_names else ""
    raise TargetError(f"{wording.name('target')} must be 'predicted', an int or a class name, "
                      f"got {spec!r}{known}")


def parse_option(items: Sequence[str], declared: OptionSet | None = None, *,
                 wording: Wording = PYTHON) -> dict[str, Any]:
    """``name=value`` pairs. With ``declared`` (a method's options), each value is read by the
    type its option declares (see :mod:`unveil.frontends.option_text`); values of undeclared
    options, or without ``declared``, are read as JSON when they parse and kept as text
    otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        try:
            _, key, text = split_item(item)
        except OptionError:
            raise OptionError(f"{wording.name('options')} must look like name=value, got "
                              f"{item!r}") from None
        opt = declared.by_name.get(key) if declared is not None else None
        out[key] = read_option(text, [opt] if opt is not None else [])
    return out
