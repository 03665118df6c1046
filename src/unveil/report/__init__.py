"""Reports for people: plots, plain-language narrative and a self-contained HTML report.

Importing this package stays light: matplotlib is imported only when something is drawn with it.

>>> rep = report(model, x, methods=["integrated_gradients", "saliency"])   # doctest: +SKIP
>>> rep.save("report.html")                                                # doctest: +SKIP
"""

from __future__ import annotations

from ._builder import MethodRun, Report, Section, build_section, default_methods, report
from .html import explanation_html
from .narrative import Narrative, display_name, narrate
from .plotting import plot_explanation

__all__ = [
    "MethodRun",
    "Narrative",
    "Report",
    "Section",
    "build_section",
    "default_methods",
    "display_name",
    "explanation_html",
    "narrate",
    "plot_explanation",
    "report",
]
