"""How a message names the settings its caller can change.

The loaders below are called from Python (the dashboard, notebooks) and from the CLI. Their
messages name keyword arguments (``allow_pickle=True``) unless the caller passes a
:class:`Wording` that maps them to its own flags, as the CLI does (``--allow-pickle``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PYTHON", "Wording"]


@dataclass(frozen=True)
class Wording:
    """Names of settings in messages: keyword arguments, or flags when ``flags`` is given.

    ``flags`` maps a keyword argument to its flag (``{"sources": "--input"}``); with
    ``cli=True`` an unmapped name ``allow_pickle`` becomes ``--allow-pickle``. ``missing`` lists
    settings this caller does not offer (the dashboard never unpickles), which messages then do
    not suggest.
    """

    cli: bool = False
    flags: Mapping[str, str] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()

    def offers(self, name: str) -> bool:
        """Whether the caller has the setting ``name``."""
        return name not in self.missing

    def name(self, name: str) -> str:
        """The setting itself: ``rows`` or ``--rows``."""
        if not self.cli:
            return name
        return self.flags.get(name, "--" + name.replace("_", "-"))

    def switch(self, name: str) -> str:
        """How to turn a yes/no setting on: ``allow_pickle=True`` or ``--allow-pickle``."""
        return self.name(name) if self.cli else f"{name}=True"

    def give(self, name: str, value: str) -> str:
        """How to give a value: ``weights='FILE'`` or ``--weights FILE``."""
        return f"{self.name(name)} {value}" if self.cli else f"{name}={value!r}"


#: Messages for Python callers (the default everywhere).
PYTHON = Wording()
