"""Reports for people: plots, plain-language narrative and a self-contained HTML report.

Public building blocks the front ends (CLI, dashboard) assemble pages from: :mod:`.facts`
(what the narrative states), :mod:`.render` (maps, tiles, tables, tokens), :mod:`.png`
(PNG and ``data:`` URIs), :mod:`.trust` (trust card, global facts), :mod:`.audit_page` (a bias
audit as an HTML page).

Importing this package stays light: matplotlib is imported only when something is drawn with it.

>>> rep = report(model, x, methods=["integrated_gradients", "saliency"])   # doctest: +SKIP
>>> rep.save("report.html")                                                # doctest: +SKIP
"""

from __future__ import annotations

from ._builder import (
    MethodRun,
    Report,
    Section,
    accepted_options,
    build_section,
    check_options,
    default_methods,
    report,
    skip_not_applicable,
)
from .html import explanation_html
from .narrative import Narrative, display_name, narrate
from .plotting import plot_explanation

__all__ = [
    "MethodRun",
    "Narrative",
    "Report",
    "Section",
    "accepted_options",
    "build_section",
    "check_options",
    "default_methods",
    "display_name",
    "explanation_html",
    "narrate",
    "plot_explanation",
    "report",
    "skip_not_applicable",
]
