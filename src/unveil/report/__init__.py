"""Reports for people: plots, plain-language narrative and a self-contained HTML report.

Public building blocks the front ends (CLI, dashboard) assemble pages from: :mod:`.facts`
(what the narrative states), :mod:`.render` (maps, tiles, tables, tokens), :mod:`.png`
(PNG and ``data:`` URIs), :mod:`.trust` (trust card, global facts), :mod:`.audit_page` (a bias
audit as an HTML page).

Plots (matplotlib, ``ax=None`` in, the Axes out): :func:`plot_explanation` (``exp.plot``) picks
one by ``kind``; :mod:`.plots_tabular` (waterfall, beeswarm, dependence), :mod:`.plots_image`
(heat map, blended, overlay; :func:`overlay` for arrays), :mod:`.plots_text` (highlighted
words), :mod:`.plots_surrogate` (partial dependence with ICE, LIME-style local surrogate bars).

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
from .plots_image import image_map, overlay, plot_image_attribution
from .plots_surrogate import local_effects, plot_local_surrogate, plot_partial_dependence
from .plots_tabular import (
    beeswarm_layout,
    plot_beeswarm,
    plot_dependence,
    plot_waterfall,
    waterfall_steps,
)
from .plots_text import plot_text, word_scores
from .plotting import plot_explanation

__all__ = [
    "MethodRun",
    "Narrative",
    "Report",
    "Section",
    "accepted_options",
    "beeswarm_layout",
    "build_section",
    "check_options",
    "default_methods",
    "display_name",
    "explanation_html",
    "image_map",
    "local_effects",
    "narrate",
    "overlay",
    "plot_beeswarm",
    "plot_dependence",
    "plot_explanation",
    "plot_image_attribution",
    "plot_local_surrogate",
    "plot_partial_dependence",
    "plot_text",
    "plot_waterfall",
    "report",
    "skip_not_applicable",
    "waterfall_steps",
    "word_scores",
]
