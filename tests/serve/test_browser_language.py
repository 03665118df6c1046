"""End to end in headless Chromium: ``unveil serve -m zoo:induction_transformer`` opens the
"why this response" view; generate, click a generated token, see its sources and the heat map;
then the logit lens, activation patching and head scores; a zoo classifier beside it keeps its
own views. A screenshot goes to
``/tmp/lang-dash.png`` (and ``$UNVEIL_SHOTS`` when set).

Chromium and Playwright as in ``test_browser.py`` (skipped without them, except under CI=true).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_browser import ARGS, CHROMIUM, _require_browser, run_server

SHOT = Path("/tmp/lang-dash.png")


@pytest.fixture
def lm_server(tmp_path: Path) -> Iterator[str]:
    _require_browser()
    import unveil as uv
    from unveil.zoo.induction import induction_transformer

    induction_transformer()  # train and cache them now (under the zoo's lock), not inside a wait
    uv.zoo.digits_cnn()
    with run_server(tmp_path, ["-m", "zoo:induction_transformer"]) as base:
        yield base


def test_why_this_response_in_chromium(lm_server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(lm_server + "/")
            # a causal LM opens the language view, not the classifier's
            expect(page.get_by_test_id("lm-controls")).to_be_visible()
            expect(page.get_by_test_id("explain")).to_be_hidden()
            expect(page.get_by_test_id("samples")).to_be_hidden()
            expect(page.get_by_test_id("lm-status")).to_contain_text("Generate and explain", timeout=60_000)
            prompt = page.get_by_test_id("lm-prompt").input_value()
            ids = prompt.split()
            assert len(ids) > 6 and all(t.isdigit() for t in ids)  # an example of repeated ids
            page.get_by_test_id("lm-max").fill("3")
            expect(page.get_by_test_id("lm-steps")).to_be_hidden()
            page.select_option("[data-testid=lm-method]", "integrated_gradients")
            page.get_by_test_id("lm-steps").fill("8")
            page.get_by_test_id("lm-generate").click()
            chips = page.locator("[data-testid=lm-generated] .lm-chip")
            expect(chips).to_have_count(3, timeout=120_000)
            # the induction model continues the repeated run: its first new token is the id that
            # followed the repeated ones the first time
            k = ids.index(ids[-1])
            expect(chips.nth(0).locator(".lm-tok")).to_have_text(f" {ids[k + 1]}")
            expect(chips.nth(0).locator(".lm-score")).to_contain_text("p 0.")
            heat = page.get_by_test_id("lm-heatmap")
            expect(heat).to_be_visible()
            # rows: the prompt's tokens and the generated ones before the last; columns: 3 tokens
            expect(heat.locator("thead th.col")).to_have_count(3)
            expect(heat.locator("tbody tr")).to_have_count(len(ids) + 2)
            chips.nth(1).click()
            expect(chips.nth(1)).to_have_class("lm-chip selected")
            expect(heat.locator("th.col.selected")).to_have_text(chips.nth(1).locator(".lm-tok").inner_text())
            sources = page.get_by_test_id("lm-sources")
            expect(sources.locator(".lm-src.target")).to_have_count(1)
            coloured = sources.locator(".lm-src[data-value]")
            assert coloured.count() == len(ids) + 1  # the prompt and the first generated token
            page.screenshot(path=str(SHOT), full_page=True)
            href = page.get_by_test_id("lm-download").get_attribute("href")
            assert href and href.startswith("/api/language/pages/")

            page.get_by_test_id("lm-lens-run").click()
            expect(page.get_by_test_id("lm-lens-grid").locator("tbody tr")).to_have_count(3, timeout=120_000)
            page.get_by_test_id("lm-patch-run").click()
            expect(page.get_by_test_id("lm-patch-resid").locator("tbody tr")).to_have_count(2, timeout=120_000)
            page.get_by_test_id("lm-heads-run").click()
            expect(page.get_by_test_id("lm-heads-induction").locator("tbody tr")).to_have_count(2, timeout=120_000)
            expect(page.get_by_test_id("error")).to_be_hidden()
            page.screenshot(path=str(tmp_path / "inside.png"), full_page=True)
            if os.environ.get("UNVEIL_SHOTS"):
                shutil.copy(SHOT, Path(os.environ["UNVEIL_SHOTS"]) / "lang-dash.png")
                shutil.copy(tmp_path / "inside.png", Path(os.environ["UNVEIL_SHOTS"]) / "lang-dash-inside.png")
            shutil.copy(tmp_path / "inside.png", SHOT.with_name("lang-dash-inside.png"))

            # a classifier from the zoo gets the classifier's views back, and the LM its own again
            page.select_option("[data-testid=model-select]", "digits_cnn")
            expect(page.get_by_test_id("samples").locator("[data-testid=sample]").first).to_be_visible(timeout=60_000)
            expect(page.get_by_test_id("explain")).to_be_visible()
            expect(page.get_by_test_id("lm-controls")).to_be_hidden()
            expect(page.get_by_test_id("lm-response")).to_be_hidden()
            page.select_option("[data-testid=model-select]", "zoo:induction_transformer")
            expect(page.get_by_test_id("lm-controls")).to_be_visible()
            expect(page.get_by_test_id("explain")).to_be_hidden()

            # a bad prompt gets the server's one-line message
            page.get_by_test_id("lm-prompt").fill("not ids")
            page.get_by_test_id("lm-generate").click()
            expect(page.get_by_test_id("error")).to_contain_text("type token ids", timeout=60_000)
            assert errors == []
        finally:
            ctx.close()
    assert SHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    external = [u for u in requests if not u.startswith((lm_server, "data:"))]
    assert external == [], f"the page fetched external resources: {external}"
