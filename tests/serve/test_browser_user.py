"""A new user's session in headless Chromium: ``unveil serve`` on the user's own model and data
(an MLP written into a temporary folder, a CSV table with a text column handled by a
preprocess object and a column the model does not take), then explain, sanity check, what-if,
distill, audit, download the report and switch model — checking what the screen shows at each
step, at 1400x900.

Chromium is Debian's package, driven by Playwright's Python package (never ``playwright
install``); see ``test_browser.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _user_files import credit_rows, write_user_files
from test_browser import ARGS, CHROMIUM, _require_browser, run_server

if TYPE_CHECKING:
    from playwright.sync_api import FilePayload, ViewportSize

VIEW: ViewportSize = {"width": 1400, "height": 900}
SHOTS = os.environ.get("UNVEIL_SHOTS")  # a folder for screenshots while developing (e.g. /tmp)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    _require_browser()
    write_user_files(tmp_path)
    args = ["--no-zoo", "-m", "usermodel:credit_mlp", "--data", "credit.csv", "--label-column", "approved",
            "--class-names", "rejected,approved", "--preprocess", "usermodel:preprocess",
            "-m", "usermodel:other_mlp"]
    with run_server(tmp_path, args, cwd=tmp_path, wait=180) as base:
        yield base


def _shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"dash-{name}.png"))


def _in_view(page, test_id: str) -> bool:
    """Whether the element's top edge is on screen (below the sticky bar is fine)."""
    box = page.get_by_test_id(test_id).bounding_box()
    return box is not None and 0 <= box["y"] < VIEW["height"] - 40


def test_user_model_session_in_chromium(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    rows = credit_rows()
    # a row the data labels rejected because its income is low and its debt high: raising the
    # income and lowering the debt (what approval follows in the data) must raise P(approved)
    pick = next(i for i, r in enumerate(rows) if r[4] == "rejected" and float(r[0]) < -0.5 and float(r[1]) > 0.5)
    requests: list[str] = []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport=VIEW, accept_downloads=True)
        try:
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")

            # the user's model with its data: samples, the kept-aside column named, no CAMs
            expect(page.get_by_test_id("model-desc")).to_contain_text("not read by the model: group")
            expect(page.locator("[data-testid=sample]").first).to_be_visible()
            expect(page.locator("[data-testid=sample]").first).to_contain_text("region=")
            expect(page.get_by_test_id("method-integrated_gradients")).to_be_visible()
            assert page.get_by_test_id("method-grad_cam").count() == 0
            expect(page.get_by_test_id("methods-not-offered")).to_contain_text("not offered")

            # explain a sample (paging to it)
            while page.locator(f"[data-testid=sample][data-index='{pick}']").count() == 0:
                page.click("#next")
            page.locator(f"[data-testid=sample][data-index='{pick}']").click()
            expect(page.get_by_test_id("selected")).to_contain_text(f"sample #{pick}")
            page.get_by_test_id("method-saliency").check()
            page.get_by_test_id("method-integrated_gradients").check()
            page.get_by_test_id("explain").click()
            expect(page.locator("[data-testid=map]")).to_have_count(2, timeout=120_000)
            expect(page.get_by_test_id("status")).to_have_text("done")
            expect(page.get_by_test_id("prediction")).to_contain_text("Predicted: rejected")
            expect(page.locator("[data-testid=metric-row]")).to_have_count(2)
            metrics = page.get_by_test_id("metrics").inner_text()
            assert "_" not in metrics, metrics  # human labels, not deletion_auc
            assert "model evaluations" in metrics
            assert not re.search(r"\b1 model evaluations\b", page.get_by_test_id("maps").inner_text())
            assert _in_view(page, "result"), "the results are scrolled into view"
            assert _in_view(page, "explain"), "the Explain button stays reachable"
            _shot(page, "1-explain")

            # sanity check of saliency on this input
            page.select_option("#sanity-method", "saliency")
            page.get_by_test_id("sanity-run").click()
            expect(page.get_by_test_id("sanity-verdict")).to_have_text(
                re.compile("^(passed|failed|undefined)$"), timeout=120_000)
            _shot(page, "2-sanity")

            # what-if: a higher income and a lower debt
            expect(page.get_by_test_id("whatif")).to_be_visible()
            expect(page.get_by_test_id("whatif-group")).to_be_disabled()  # not read by the model
            expect(page.get_by_test_id("whatif-region")).to_have_value(rows[pick][2])
            page.get_by_test_id("whatif-income").fill("")  # an empty cell is not a zero
            page.get_by_test_id("whatif-run").click()
            expect(page.get_by_test_id("error")).to_have_text("income: enter a number.")
            page.get_by_test_id("whatif-income").fill("3")
            page.get_by_test_id("whatif-debt").fill("-1")
            page.get_by_test_id("whatif-run").click()
            expect(page.get_by_test_id("whatif-result")).to_contain_text("income:", timeout=120_000)
            expect(page.get_by_test_id("whatif-result")).to_contain_text("→ 3")
            expect(page.get_by_test_id("prediction-before")).to_contain_text("rejected")
            expect(page.get_by_test_id("prediction")).to_contain_text("Predicted: approved")
            expect(page.locator("[data-testid=map]")).to_have_count(2)
            assert _in_view(page, "result")
            expect(page.get_by_test_id("error")).to_be_hidden()
            _shot(page, "3-whatif")
            # the sanity check runs on the original input, and says so after a what-if
            page.get_by_test_id("sanity-run").click()
            expect(page.get_by_test_id("sanity-result")).to_contain_text(
                "the original input (the check does not run on what-if edits)", timeout=120_000)

            # the whole model: a surrogate, and an audit of the column the model does not read
            page.get_by_test_id("distill-run").click()
            expect(page.get_by_test_id("surrogate-fidelity")).to_contain_text(
                "Agrees with the model on", timeout=120_000)
            expect(page.get_by_test_id("surrogate-text")).to_contain_text("THEN")
            assert _in_view(page, "global")
            _shot(page, "4-distill")
            column = page.get_by_test_id("audit-column")
            expect(column).to_have_value("group")  # offered first: the model does not read it
            expect(column.locator("option[value=group]")).to_contain_text("not read by the model")
            page.get_by_test_id("audit-run").click()
            expect(page.get_by_test_id("audit-verdict")).to_have_text(
                re.compile("^(PASS|REVIEW|FAIL)$"), timeout=120_000)
            expect(page.get_by_test_id("global")).to_contain_text("Bias audit of group")
            assert _in_view(page, "global")
            _shot(page, "5-audit")

            # the report holds everything computed, the sanity check included
            with page.expect_download() as dl:
                page.get_by_test_id("download-session").click()
            html = Path(dl.value.path()).read_text(encoding="utf-8")
            assert "Sanity check of Saliency" in html
            assert "Bias audit of group" in html and "Surrogate (" in html
            assert "what-if: income:" in html

            # a table without the model's columns: the server's one line, as it is
            wrong: FilePayload = {"name": "wrong.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,2\n"}
            page.set_input_files("#upload", files=[wrong])
            expect(page.get_by_test_id("error")).to_contain_text("lacks the columns income, debt")
            assert not page.get_by_test_id("error").inner_text().startswith(("{", "422"))
            _shot(page, "5b-upload-error")

            # switch model: nothing of the previous model stays on screen
            page.select_option("[data-testid=model-select]", "usermodel:other_mlp")
            expect(page.get_by_test_id("maps")).to_be_empty()
            expect(page.get_by_test_id("result")).to_be_hidden()
            expect(page.get_by_test_id("global")).to_be_empty()
            expect(page.get_by_test_id("metrics")).to_be_empty()
            expect(page.get_by_test_id("downloads")).to_be_empty()
            expect(page.get_by_test_id("sanity")).to_be_hidden()
            expect(page.get_by_test_id("whatif")).to_be_hidden()
            expect(page.get_by_test_id("selected")).to_have_text("No input chosen.")
            expect(page.locator("#next")).to_be_hidden()  # no samples: nothing to page through
            expect(page.get_by_test_id("status")).to_contain_text("no samples: upload an input")
            assert page.get_by_test_id("method-grad_cam").count() == 0
            _shot(page, "6-switch")
            expect(page.get_by_test_id("error")).to_be_hidden()
            assert errors == []
        finally:
            ctx.close()
    external = [u for u in requests if not u.startswith((server, "data:"))]
    assert external == [], f"the page fetched external resources: {external}"
