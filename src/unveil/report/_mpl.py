"""Small matplotlib helpers shared by the plot modules (imported only when something is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..core.options import suggest
from ..errors import InputError, OptionError, require

POS_HEX = "#d6302a"  # the report's red (render.POS): pushes towards the explained output
NEG_HEX = "#296bbf"  # the report's blue (render.NEG): pushes against it


def pyplot() -> Any:
    """``matplotlib.pyplot`` (the ``viz`` extra)."""
    return require("matplotlib.pyplot", "viz")


def new_axes(ax: Any, figsize: tuple[float, float]) -> Any:
    """``ax``, or the Axes of a new figure with constrained layout (so labels stay inside)."""
    if ax is not None:
        return ax
    _, ax = pyplot().subplots(figsize=figsize, layout="constrained")
    return ax


def check_index(exp: Explanation, index: int) -> int:
    """``index`` as a non-negative row number of ``exp`` (negative counts from the end)."""
    n = len(exp)
    if not -n <= index < n:
        raise InputError(f"index {index} is out of range for an explanation of {n} samples")
    return index % n


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``; an :class:`OptionError` naming them otherwise."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise OptionError(f"{name} must be one of {listed}, got {value!r}.{suggest(str(value), choices)}")
    return value


def fmt(v: float) -> str:
    """A number as people read it: four significant digits, no ``+`` sign."""
    return "nan" if not np.isfinite(v) else f"{v:.4g}"


def signed(v: float) -> str:
    """A contribution with its sign: ``+0.123`` or ``−0.123`` (a true minus)."""
    return ("+" if v >= 0 else "\u2212") + fmt(abs(v))
