"""The method registry: every method declares itself once, under a snake_case name.

The declaration (:func:`register`) holds everything the layers above need to know about a
method: its options (see :mod:`unveil.core.options`), whether it takes a seed, its display name,
whether its values are signed, the modalities it suits and those it is preferred for, and which
methods a wrapper may wrap. :func:`list_methods`, :func:`get_method` and :func:`options` answer
from it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import UnknownMethodError
from .options import Option, OptionSet

__all__ = [
    "MODALITIES",
    "MethodInfo",
    "MethodTable",
    "OptionTable",
    "get_method",
    "list_methods",
    "options",
    "register",
]

T = TypeVar("T")
MODALITIES = ("image", "tabular", "text", "sequence")
_REGISTRY: dict[str, MethodInfo] = {}
_ACRONYMS = {"cam": "CAM", "lrp": "LRP", "lime": "LIME", "shap": "SHAP", "rise": "RISE",
             "deeplift": "DeepLIFT", "x": "×"}


def _default_display(name: str) -> str:
    return " ".join(_ACRONYMS.get(w, w.capitalize()) for w in name.split("_"))


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method: its declaration.

    ``preferred_for`` maps a modality to the method's rank among the defaults for it (0 first).
    ``signed``: whether the sign of a value means "for" / "against" (else a magnitude).
    ``wraps``: the registry names a wrapper method may wrap (empty for other methods).
    """

    name: str
    cls: type
    family: str
    modalities: tuple[str, ...]
    needs_gradients: bool
    stochastic: bool
    needs_module: bool
    summary: str
    display_name: str = ""
    signed: bool = True
    takes_seed: bool = False
    preferred_for: Mapping[str, int] = field(default_factory=dict, repr=False)
    wraps: tuple[str, ...] = field(default=(), repr=False)
    options: OptionSet = field(default_factory=lambda: OptionSet("?", ()), repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe description (class given by name)."""
        return {
            "name": self.name,
            "class": self.cls.__name__,
            "display_name": self.display_name,
            "family": self.family,
            "modalities": list(self.modalities),
            "needs_gradients": self.needs_gradients,
            "stochastic": self.stochastic,
            "needs_module": self.needs_module,
            "signed": self.signed,
            "takes_seed": self.takes_seed,
            "preferred_for": dict(self.preferred_for),
            "wraps": list(self.wraps),
            "summary": self.summary,
            "options": [o.as_dict() for o in self.options],
        }

    def needs_data(self, modality: str) -> bool:
        """Whether the method needs rows of real data to explain inputs of ``modality``:
        perturbation and Shapley methods on tables, where no value stands for an absent feature
        (they take ``background=``, or the model's ``reference=`` rows)."""
        return modality == "tabular" and self.family in ("perturbation", "shapley")

    def split_options(self, opts: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check ``opts`` against the declaration and split them into constructor and call
        options; an unknown or ill-typed option raises :class:`~unveil.errors.OptionError`."""
        return self.options.split(opts)


class MethodTable(list[MethodInfo]):
    """A list of :class:`MethodInfo` that prints as a table (``repr``, notebooks, pandas)."""

    _COLUMNS = ("name", "family", "gradients", "modalities", "summary")

    def _rows(self) -> list[tuple[str, ...]]:
        return [(m.name, m.family, "yes" if m.needs_gradients else "no", ",".join(m.modalities),
                 m.summary) for m in self]

    def __repr__(self) -> str:
        rows = self._rows()
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(self._COLUMNS[:-1])]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self._COLUMNS, widths)) + "  summary"]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{c}</th>" for c in self._COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in r) + "</tr>"
                       for r in self._rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def names(self) -> list[str]:
        """The registry names, in table order."""
        return [m.name for m in self]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per method (needs pandas)."""
        from ..errors import require

        pd: Any = require("pandas", "audit")
        return pd.DataFrame([m.as_dict() for m in self])


class OptionTable(list[Option]):
    """A method's options, printable as a table (``uv.options("kernel_shap")``)."""

    def __init__(self, method: str, items: Iterable[Option]) -> None:
        super().__init__(items)
        self.method = method

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        from .options import type_text

        return [(o.name, o.where, type_text(o.type), repr(o.default), o.meaning
                 + (f" (range {o.range_text()})" if o.range_text() else "")) for o in self]

    def __repr__(self) -> str:
        rows = self._rows()
        cols = ("option", "where", "type", "default")
        widths = [min(40, max([len(c)] + [len(r[i]) for r in rows])) for i, c in enumerate(cols)]
        lines = [f"options of {self.method!r}:",
                 "  ".join(c.ljust(w) for c, w in zip(cols, widths)) + "  meaning"]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{c}</th>" for c in ("option", "where", "type", "default", "meaning"))
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in r) + "</tr>"
                       for r in self._rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def names(self) -> list[str]:
        """The option names."""
        return [o.name for o in self]


def register(
    name: str,
    *,
    family: str,
    modalities: tuple[str, ...] = MODALITIES,
    needs_gradients: bool = False,
    stochastic: bool = False,
    needs_module: bool | None = None,
    options: Iterable[Option] = (),
    common: Iterable[str] = (),
    takes_seed: bool | None = None,
    display_name: str | None = None,
    signed: bool = True,
    preferred_for: Mapping[str, int] | None = None,
    wraps: Iterable[str] = (),
) -> Callable[[type[T]], type[T]]:
    """Class decorator that declares a method and adds it to the registry under ``name``.

    ``options`` are the method's own options; ``common`` names the shared options it uses
    beyond those every method takes (e.g. ``"background"``). ``takes_seed`` defaults to
    ``stochastic``. See :class:`MethodInfo` for the rest.
    """

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
            display_name=display_name or _default_display(name),
            signed=signed,
            takes_seed=stochastic if takes_seed is None else takes_seed,
            preferred_for=dict(preferred_for or {}),
            wraps=tuple(wraps),
            options=OptionSet(name, options, common),
        )
        cls.name = name  # type: ignore[attr-defined]  # the registry name on the class itself
        return cls

    return deco


def list_methods(modality: str | None = None) -> MethodTable:
    """Registered methods, sorted by family then name; optionally for one modality.

    The method families register when ``unveil`` is imported (its ``__init__`` imports them),
    so the registry is full before any of its functions can be called.
    """
    out = [m for m in _REGISTRY.values() if modality is None or modality in m.modalities]
    return MethodTable(sorted(out, key=lambda m: (m.family, m.name)))


def get_method(name: str) -> MethodInfo:
    """The registered method ``name``; the error lists close names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownMethodError(
        f"no method named {name!r}.{hint} uv.methods() lists the {len(_REGISTRY)} available: "
        + ", ".join(sorted(_REGISTRY))
    )


def options(method: str) -> OptionTable:
    """The options ``method`` takes, with type, default, range and meaning.

    A list of :class:`~unveil.core.options.Option` that prints as a table.

    >>> import unveil as uv
    >>> table = uv.options("saliency")
    >>> table  # doctest: +ELLIPSIS
    options of 'saliency':
    option...where...type...default...meaning
    target...call...int | str | array-like | None...'predicted'...the class explained per row...
    >>> {o.name: o.default for o in table}["batch_size"]
    'auto'
    """
    info = get_method(method)
    return OptionTable(method, info.options)
