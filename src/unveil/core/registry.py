"""The method registry: every method registers its class under a snake_case name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import UnknownMethodError

__all__ = ["MethodInfo", "get_method", "list_methods", "register"]

T = TypeVar("T")
MODALITIES = ("image", "tabular", "text", "sequence")
_REGISTRY: dict[str, MethodInfo] = {}


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method."""

    name: str
    cls: type
    family: str
    modalities: tuple[str, ...]
    needs_gradients: bool
    stochastic: bool
    needs_module: bool
    summary: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe description (class given by name)."""
        return {
            "name": self.name,
            "class": self.cls.__name__,
            "family": self.family,
            "modalities": list(self.modalities),
            "needs_gradients": self.needs_gradients,
            "stochastic": self.stochastic,
            "needs_module": self.needs_module,
            "summary": self.summary,
        }


def register(
    name: str,
    *,
    family: str,
    modalities: tuple[str, ...] = MODALITIES,
    needs_gradients: bool = False,
    stochastic: bool = False,
    needs_module: bool | None = None,
) -> Callable[[type[T]], type[T]]:
    """Class decorator that adds a method to the registry under ``name``."""

    def deco(cls: type[T]) -> type[T]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"method name {name!r} is registered twice")
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodInfo(
            name=name,
            cls=cls,
            family=family,
            modalities=tuple(modalities),
            needs_gradients=needs_gradients,
            stochastic=stochastic,
            needs_module=needs_gradients if needs_module is None else needs_module,
            summary=doc[0] if doc else "",
        )
        cls.name = name  # type: ignore[attr-defined]  # the registry name on the class itself
        return cls

    return deco


def _load_all() -> None:
    """Import the method families so that their decorators have run."""
    import importlib

    for mod in ("unveil.attribution",):
        importlib.import_module(mod)
    for mod in ("unveil.attention",):
        try:
            importlib.import_module(mod)
        except ImportError:  # optional families may be absent
            pass


def list_methods(modality: str | None = None) -> list[MethodInfo]:
    """Registered methods, sorted by family then name; optionally for one modality."""
    _load_all()
    out = [m for m in _REGISTRY.values() if modality is None or modality in m.modalities]
    return sorted(out, key=lambda m: (m.family, m.name))


def get_method(name: str) -> MethodInfo:
    """The registered method ``name``; the error lists close names."""
    _load_all()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownMethodError(
        f"no method named {name!r}.{hint} uv.methods() lists the {len(_REGISTRY)} available: "
        + ", ".join(sorted(_REGISTRY))
    )
