"""The Concepts view in headless Chromium: on the marked-digits CNN, upload a set of corner-mark
examples as one concept, pick samples as another, test them for class 7 and read the verdicts;
a screenshot of the view goes to ``/tmp/tcav.png`` (and ``$UNVEIL_SHOTS`` when set).

Skipped without Chromium and Playwright's Python package, as ``test_browser.py`` is."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_browser import ARGS, CHROMIUM, _require_browser, run_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    _require_browser()
    import unveil as uv

    uv.zoo.marked_digits_cnn()  # train and cache it now, not inside a wait
    with run_server(tmp_path) as base:
        yield base


def _marks_npy() -> bytes:
    from unveil.zoo import corner_mark_examples

    buf = io.BytesIO()
    np.save(buf, corner_mark_examples(30, seed=2).numpy())
    return buf.getvalue()


def test_concepts_view_in_chromium(server: str, tmp_path: Path) -> None:
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
            page.goto(server + "/")
            page.select_option("[data-testid=model-select]", "marked_digits_cnn")
            view = page.get_by_test_id("concepts")
            expect(view).to_be_visible(timeout=60_000)
            expect(page.get_by_test_id("tcav-layer")).to_have_value("features.6")
            page.select_option("[data-testid=tcav-target]", "7")
            # concept 1: an uploaded set of digits of other classes carrying the corner mark
            page.get_by_test_id("tcav-name").fill("corner mark")
            page.get_by_test_id("tcav-upload").set_input_files(
                files=[{"name": "marks.npy", "mimeType": "application/octet-stream",
                        "buffer": _marks_npy()}])  # type: ignore[arg-type]  # a FilePayload
            expect(page.get_by_test_id("tcav-picked")).to_contain_text("30 examples")
            page.get_by_test_id("tcav-add").click()
            # concept 2: samples picked in the grid
            page.get_by_test_id("tcav-name").fill("picked samples")
            thumbs = page.locator("[data-testid=tcav-sample]")
            expect(thumbs.first).to_be_visible()
            for i in range(12):
                thumbs.nth(i).click()
            expect(page.get_by_test_id("tcav-picked")).to_contain_text("picked: 12")
            page.get_by_test_id("tcav-add").click()
            expect(page.locator("[data-testid=tcav-concept]")).to_have_count(2)
            page.select_option("#tcav-runs", "20")
            page.get_by_test_id("tcav-run").click()
            verdicts = page.locator("[data-testid=tcav-verdict]")
            expect(verdicts).to_have_count(2, timeout=120_000)
            expect(verdicts.nth(0)).to_contain_text("corner mark: significant")
            expect(verdicts.nth(1)).to_contain_text(
                __import__("re").compile("picked samples: (significant|not distinguishable from random)"))
            expect(page.get_by_test_id("tcav-chart").locator("svg")).to_be_visible()
            page.evaluate("document.getElementById('bar').style.position = 'static'")
            view.scroll_into_view_if_needed()
            view.screenshot(path="/tmp/tcav.png")
            if os.environ.get("UNVEIL_SHOTS"):
                view.screenshot(path=str(Path(os.environ["UNVEIL_SHOTS"]) / "dash-concepts.png"))
            assert errors == []
        finally:
            ctx.close()
    assert Path("/tmp/tcav.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    external = [u for u in requests if not u.startswith((server, "data:"))]
    assert external == [], f"the page fetched external resources: {external}"
