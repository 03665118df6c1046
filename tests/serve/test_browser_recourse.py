"""The what-if view's recourse card in headless Chromium, on a user's model and data (the MLP,
the credit CSV with a text column and a column the model does not read, from
``_user_files.py``): the smallest change that flips a rejected row, shown as a sentence and a
table in the data's own values and words; fixing every column the model reads gives the honest
"no counterfactual" answer; an anchor with its precision and coverage. A screenshot of the card
goes to ``/tmp/cf-dash.png`` (or ``$UNVEIL_SHOTS``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from _user_files import credit_rows
from test_browser import ARGS, CHROMIUM
from test_browser_user import VIEW, server  # noqa: F401  (the fixture)


def test_recourse_card_in_chromium(server: str, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    rows = credit_rows()
    # a row the data rejects for a low income and a high debt: a higher income flips it
    pick = next(i for i, r in enumerate(rows) if r[4] == "rejected" and float(r[0]) < -0.5 and float(r[1]) > 0.5)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS,
                                                   headless=True, viewport=VIEW)
        try:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            expect(page.locator("[data-testid=sample]").first).to_be_visible(timeout=120_000)
            while page.locator(f"[data-testid=sample][data-index='{pick}']").count() == 0:
                shown = page.locator("#page").inner_text()
                page.click("#next")
                expect(page.locator("#page")).not_to_have_text(shown, timeout=60_000)  # the next page came
            page.locator(f"[data-testid=sample][data-index='{pick}']").click()
            page.get_by_test_id("method-saliency").check()
            page.get_by_test_id("explain").click()
            expect(page.get_by_test_id("prediction")).to_contain_text("Predicted: rejected", timeout=120_000)

            card = page.get_by_test_id("recourse")
            expect(card).to_be_visible()
            expect(page.get_by_test_id("cf-how-group")).to_be_disabled()  # not read by the model
            expect(page.get_by_test_id("cf-how-region").locator("option")).to_have_count(2)  # words: free or fixed
            page.get_by_test_id("cf-run").click()
            sentence = page.get_by_test_id("cf-sentence")
            expect(sentence).to_contain_text("Had ", timeout=120_000)
            expect(sentence).to_contain_text("\u201capproved\u201d instead of \u201crejected\u201d")
            table = page.get_by_test_id("cf-table")
            expect(table).to_contain_text("new decision")
            expect(table).to_contain_text("approved")
            assert page.locator("[data-testid=cf-change]").count() >= 1
            changed = page.locator("[data-testid=cf-change] td:first-child").all_inner_texts()
            assert "group" not in changed
            region_now = rows[pick][2]
            for r in page.locator("[data-testid=cf-change]").all():
                cells = r.locator("td").all_inner_texts()
                if cells[0] == "region":  # a text column shows its words, never a code
                    assert cells[1] == region_now
                    assert all(c in ("same", "north", "south", "east", "west") for c in cells[2:]), cells
            card.scroll_into_view_if_needed()
            page.get_by_test_id("cf-constraints").locator("summary").click()
            page.get_by_test_id("cf-how-debt").select_option("down")
            page.get_by_test_id("cf-low-income").fill("-5")
            shots = Path(os.environ.get("UNVEIL_SHOTS") or "/tmp")
            page.get_by_test_id("anchor-run").click()
            expect(page.get_by_test_id("anchor-sentence")).to_contain_text("the model decides \u201crejected\u201d",
                                                                            timeout=120_000)
            expect(page.get_by_test_id("anchor-sentence")).to_contain_text(
                re.compile(r"in \d+% of cases; \d+(\.\d)?% of the data meet these conditions"))
            card.screenshot(path=str(shots / "cf-dash.png"))

            # everything the model reads fixed: no counterfactual, said so, with no table of changes
            for col in ("income", "debt", "region"):
                page.get_by_test_id(f"cf-how-{col}").select_option("fixed")
            page.get_by_test_id("cf-run").click()
            expect(page.get_by_test_id("cf-status")).to_contain_text("No counterfactual within these constraints",
                                                                     timeout=120_000)
            expect(page.get_by_test_id("cf-sentence")).to_contain_text("No change within these constraints")
            expect(page.get_by_test_id("error")).to_be_hidden()
            card.screenshot(path=str(shots / "cf-dash-none.png"))
            assert not errors, errors
        finally:
            ctx.close()
