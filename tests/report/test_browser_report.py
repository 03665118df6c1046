"""A report and an audit page in headless Chromium at 1280x800: the decision, its reasons and
the verdict are on the first screen, above y = 800 (bounding boxes of their ``data-testid``s).

Chromium is Debian's package, driven by Playwright's Python package (never ``playwright
install``). Without it the test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

CHROMIUM = shutil.which("chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}


def _require_browser() -> None:
    missing = []
    if CHROMIUM is None:
        missing.append("the chromium binary is not on PATH (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package is not installed")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI=true: {reason}")
        pytest.skip(reason)


def _boxes(path: Path, ids: list[str], tmp_path: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]  # a ViewportSize dict
            page.goto(path.resolve().as_uri())
            out = {}
            for i in ids:
                box = page.locator(f"[data-testid={i}]").first.bounding_box()
                assert box is not None, f"{i} is not displayed"
                out[i] = box
            page.screenshot(path=str(tmp_path / f"{path.stem}.png"))
        finally:
            browser.close()
    return out


def _table_model() -> tuple[nn.Module, torch.Tensor]:
    with torch.random.fork_rng():  # seeded without touching the session's random state
        torch.manual_seed(0)
        X = torch.randn(200, 8) * 3 + 10
        y = (X[:, 0] - X[:, 1] > 0).long()
        net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(net(X), y).backward()
            opt.step()
    return net.eval(), X


def test_first_screen_of_a_report_and_an_audit_page(tmp_path: Path) -> None:
    _require_browser()
    from unveil.report import report

    net, X = _table_model()
    names = ["income", "debt", "age", "tenure", "savings", "children", "region", "score"]
    rep = report(net, X[:3], methods=["integrated_gradients", "saliency", "grad_cam"],
                 class_names=["rejected", "approved"], feature_names=names, data=X,
                 description="A loan model trained on the spot.", on_error="record")
    path = rep.save(tmp_path / "report.html")
    boxes = _boxes(path, ["decision", "reasons", "verdict"], tmp_path)
    for k, b in boxes.items():
        assert b["y"] + b["height"] <= VIEWPORT["height"], f"{k} ends below the first screen: {b}"
    assert boxes["decision"]["y"] < boxes["reasons"]["y"] < boxes["verdict"]["y"]

    pytest.importorskip("fairlearn")
    from unveil.audit import bias_audit
    from unveil.audit.examples import credit_scorer, synthetic_credit

    Xc, yc, cnames = synthetic_credit(400, seed=3)
    audit = bias_audit(credit_scorer(), Xc, sensitive="gender", y=yc, feature_names=cnames,
                       n_explain=60, class_names=["rejected", "approved"])
    apath = audit.save(tmp_path / "audit.html")
    boxes = _boxes(apath, ["audit-facts", "verdict", "reasons"], tmp_path)
    for k, b in boxes.items():
        assert b["y"] + b["height"] <= VIEWPORT["height"], f"{k} ends below the first screen: {b}"
    shot = (tmp_path / "audit.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and np.frombuffer(shot, np.uint8).size > 10_000
