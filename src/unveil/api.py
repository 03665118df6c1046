"""``unveil.explain``, ``unveil.methods`` and ``unveil.options``: re-exported from the core."""

from __future__ import annotations

from .core.explain import explain, make_explainer, methods
from .core.registry import options

__all__ = ["explain", "make_explainer", "methods", "options"]
