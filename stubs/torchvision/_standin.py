"""Shared pieces of the torchvision stand-in: the error it raises and a module ``__getattr__``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["StandInError", "missing", "module_getattr"]

_HINT = (
    "unveil's torchvision stand-in (stubs/torchvision) only provides the few names that zennit, "
    "pytorch-grad-cam, quantus and torch-lucent import at import time, plus a working "
    "transforms.Normalize; real torchvision cannot be installed beside the CPU torch build here"
)


class StandInError(AttributeError):
    """A torchvision name that the stand-in does not provide was used.

    It is an ``AttributeError`` so that ``hasattr``/``getattr(..., default)`` keep working.
    """


def missing(qualname: str) -> NoReturn:
    """Raise :class:`StandInError` for ``qualname``."""
    raise StandInError(f"torchvision name {qualname!r} is not available: {_HINT}")


def module_getattr(module_name: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` raising a clear error for every public unknown name."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            # dunder probes (__path__, __wrapped__, ...) keep Python's normal semantics
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        missing(f"{module_name}.{name}")

    return __getattr__


def placeholder_function(qualname: str) -> Callable[..., Any]:
    """A function that exists (so it can be imported) but raises when called."""

    def fn(*args: Any, **kwargs: Any) -> Any:
        missing(qualname)

    fn.__name__ = qualname.rsplit(".", 1)[-1]
    fn.__qualname__ = fn.__name__
    return fn
