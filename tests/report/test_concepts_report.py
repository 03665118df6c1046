"""The TCAV report section: self-contained HTML with the chart, the table and plain sentences."""

from __future__ import annotations

import numpy as np

from unveil.concepts import TCAVResult
from unveil.report.concepts import tcav_page, tcav_section, tcav_sentences


def _result() -> TCAVResult:
    return TCAVResult(
        concepts=["stripes", "dots <b>"], scores=np.array([0.95, 0.5]),
        run_scores=np.array([[0.9, 1.0, 0.95], [0.4, 0.6, 0.5]]),
        random_scores=np.array([0.5, 0.4, 0.6]), control_scores=np.array([0.45, 0.55, 0.5]),
        control_p=0.9, p_values=np.array([0.001, 0.99]), p_corrected=np.array([0.002, 1.0]),
        p_scores=np.array([0.001, 0.99]), p_separation=np.array([1e-9, 0.5]),
        separation=np.array([0.3, 0.65]), random_separation=0.65,
        magnitudes=np.array([0.9, 0.5]), cav_accuracy=np.array([0.99, 0.6]), random_accuracy=0.6,
        layer="features.6", target=3, target_name="zebra", n_random=3, n_random_mode="given",
        power=0.5, min_effect=0.2, alpha=0.05, n_inputs=10, n_examples={"stripes": 20,
                                                                        "dots <b>": 20},
        random_size=20, pool="flatten", seed=0)


def test_sentences_say_significant_or_not() -> None:
    s = tcav_sentences(_result())
    assert "significantly different" in s[0] and "raises" in s[0] and "95%" in s[0]
    assert "not distinguishable from random" in s[1]


def test_section_and_page_are_self_contained_and_escaped() -> None:
    html = tcav_section(_result())
    assert "<svg" in html and "features.6" in html and "random (control)" in html
    assert "dots &lt;b&gt;" in html and "dots <b>" not in html
    page = tcav_page(_result())
    assert page.lstrip().lower().startswith("<!doctype html")
    assert "<script src" not in page and "cdn" not in page.lower()
