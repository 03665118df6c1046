"""Concept maps in headless Chromium: explain a marked 7 of the planted-concept model, then ask
for its top concepts at the last convolution and see heat maps and reference examples appear.
Set ``UNVEIL_SHOTS`` to a folder to keep a screenshot (``crp.png``)."""

from __future__ import annotations

import os
from pathlib import Path

from test_browser import ARGS, CHROMIUM, server  # noqa: F401  # the fixture, by name


def test_concept_maps_in_chromium(server: str, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 1100})
        try:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            page.select_option("[data-testid=model-select]", "marked_digits_cnn")
            expect(page.locator("[data-testid=sample]").first).to_be_visible(timeout=120_000)
            page.locator("[data-testid=sample][title='label: 7']").first.click()  # a marked 7
            page.get_by_test_id("method-saliency").check()
            page.get_by_test_id("explain").click()
            expect(page.locator("[data-testid=map]").first).to_be_visible(timeout=120_000)
            card = page.get_by_test_id("concept-maps")
            expect(card).to_be_visible(timeout=30_000)
            expect(page.get_by_test_id("concept-layer")).to_have_value("features.6")
            page.get_by_test_id("concept-run").click()
            concepts = page.locator("[data-testid=concept]")
            expect(concepts).to_have_count(4, timeout=120_000)
            expect(page.get_by_test_id("concept-summary")).to_contain_text("Class 7")
            for i in range(4):
                assert concepts.nth(i).locator("img").first.evaluate("img => img.naturalWidth") >= 96
                expect(concepts.nth(i).locator("[data-testid=concept-references] img")).to_have_count(4)
            card.scroll_into_view_if_needed()
            shots = Path(os.environ.get("UNVEIL_SHOTS", tmp_path))
            card.screenshot(path=str(shots / "crp.png"))
            assert not errors, errors
        finally:
            ctx.close()
