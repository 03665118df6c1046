"""End to end in headless Chromium: pick a digit, ask which training examples drove the decision,
see thumbnails of proponents and opponents with their labels and the leave-one-out figure; then
a table model, whose training rows show their values. Screenshot in /tmp/trak.png."""

from __future__ import annotations

from pathlib import Path

from test_browser import ARGS, CHROMIUM, server  # noqa: F401  # the fixture starts unveil serve


def test_training_data_view_in_chromium(server: str, tmp_path: Path) -> None:  # noqa: F811
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
            page.select_option("[data-testid=model-select]", "breast_cancer_mlp")
            page.locator("[data-testid=sample]").nth(2).click()
            page.get_by_test_id("training-data-run").click()
            result = page.get_by_test_id("training-data-result")
            expect(result).to_contain_text("The model decided", timeout=180_000)
            rows = page.locator("[data-testid=proponents] [data-testid=training-row]")
            assert rows.count() >= 1
            expect(rows.first).to_contain_text("label")
            expect(rows.first).to_contain_text("mean radius")  # a table row shows its values
            expect(page.get_by_test_id("training-data-evaluation")).to_contain_text("correlation")

            page.select_option("[data-testid=model-select]", "digits_cnn")
            page.locator("[data-testid=sample]").nth(4).click()
            page.get_by_test_id("training-data-run").click()
            expect(result).to_contain_text("representer points", timeout=180_000)
            thumbs = page.locator("[data-testid=training-row] img")
            assert thumbs.count() >= 2
            assert thumbs.first.evaluate("img => img.naturalWidth") >= 48  # decoded, not broken
            expect(page.get_by_test_id("error")).to_be_hidden()
            page.get_by_test_id("training-data").scroll_into_view_if_needed()
            page.screenshot(path="/tmp/trak.png", full_page=True)
            assert errors == []
        finally:
            ctx.close()
    assert Path("/tmp/trak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    external = [u for u in requests if not u.startswith((server, "data:"))]
    assert external == [], f"the page fetched external resources: {external}"
