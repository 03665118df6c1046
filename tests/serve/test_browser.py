"""End to end in headless Chromium: start ``unveil serve`` on a free loopback port, pick a
sample and two methods, and see maps and metrics appear; upload an image; take a screenshot.

Chromium is Debian's package (``.ci/run`` installs it), driven by Playwright's Python package
(never ``playwright install``). Without it the test is skipped, except under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def run_server(tmp_path: Path, args: Sequence[str] = (), *, cwd: Path | None = None,
               wait: float = 120) -> Iterator[str]:
    """``unveil serve`` with ``args`` on a free loopback port until the block ends; yields its
    base URL once ``/api/health`` answers, and stops the server by its PID (its log goes to
    ``tmp_path/server.log``, shown if it exits early)."""
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "unveil.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {(tmp_path / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {wait:.0f} s")
            time.sleep(0.3)
        yield base
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    _require_browser()
    import unveil as uv

    uv.zoo.digits_cnn()  # train and cache it now (under the zoo's file lock), not inside a wait
    with run_server(tmp_path) as base:
        yield base


def _digit_png() -> bytes:
    from PIL import Image

    import unveil as uv

    img = (uv.zoo.load_dataset("digits_cnn").X_test[7, 0].numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _cancer_csv() -> bytes:
    """100 test rows of the breast-cancer model, with its first column made a 0/1 group."""
    import unveil as uv

    data = uv.zoo.load_dataset("breast_cancer_mlp")
    X = data.X_test[:100].numpy().copy()
    X[:, 0] = np.arange(100) % 2
    buf = io.StringIO()
    np.savetxt(buf, X, delimiter=",", header=",".join(data.feature_names or []), comments="")
    return buf.getvalue().encode()


def test_dashboard_in_chromium(server: str, tmp_path: Path) -> None:
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
            page.select_option("[data-testid=model-select]", "digits_cnn")
            page.locator("[data-testid=sample]").nth(4).click()
            expect(page.get_by_test_id("selected")).to_contain_text("sample #4")
            for m in ("saliency", "integrated_gradients"):
                page.get_by_test_id(f"method-{m}").check()
            page.get_by_test_id("explain").click()
            maps = page.locator("[data-testid=map]")
            expect(maps).to_have_count(2, timeout=120_000)
            expect(page.locator("[data-testid=metric-row]")).to_have_count(2)
            expect(page.get_by_test_id("prediction")).to_contain_text("Predicted:")
            expect(page.get_by_test_id("narrative")).to_contain_text("The model predicts")
            assert {maps.nth(i).get_attribute("data-method") for i in range(2)} == {
                "saliency", "integrated_gradients"}
            for i in range(2):  # each map is a decoded image, not a broken one
                w = maps.nth(i).locator("img").evaluate("img => img.naturalWidth")
                assert w >= 128
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            # what-if: paint the image's upper half with zeros and explain the painted digit
            canvas = page.get_by_test_id("whatif-canvas")
            expect(canvas).to_be_visible()
            box = canvas.locator("img").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + 2, box["y"] + 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            page.select_option("[data-testid=whatif-fill]", "zero")
            page.get_by_test_id("whatif-run").click()
            expect(page.get_by_test_id("whatif-result")).to_contain_text("painted with zeros", timeout=120_000)
            expect(page.get_by_test_id("prediction-before")).to_contain_text("before the edit")
            expect(maps).to_have_count(2)
            if os.environ.get("UNVEIL_SHOTS"):
                page.screenshot(path=str(Path(os.environ["UNVEIL_SHOTS"]) / "dash-image-whatif.png"))

            # upload an image and explain it
            page.get_by_test_id("upload").set_input_files(
                files=[{"name": "digit.png", "mimeType": "image/png", "buffer": _digit_png()}])  # type: ignore[arg-type]  # a FilePayload
            expect(page.get_by_test_id("upload-status")).to_contain_text("digit.png: an image (")
            page.get_by_test_id("explain").click()
            expect(page.get_by_test_id("status")).to_have_text("done", timeout=120_000)
            expect(page.get_by_test_id("error")).to_be_hidden()
            assert page.get_by_test_id("download-report").get_attribute("href") == "/api/session/report"
            href = page.get_by_test_id("download-run").get_attribute("href")
            assert href and href.startswith("/api/runs/")

            # a table model: distill it into rules, then audit an uploaded table
            expect(page.get_by_test_id("distill-run")).to_be_hidden()  # the CNN is not a table model
            page.select_option("[data-testid=model-select]", "breast_cancer_mlp")
            page.get_by_test_id("distill-run").click()
            expect(page.get_by_test_id("surrogate-fidelity")).to_contain_text(
                "Agrees with the model on", timeout=120_000)
            expect(page.get_by_test_id("surrogate-text")).to_contain_text("THEN")
            expect(page.get_by_test_id("audit-run")).to_be_disabled()  # no column has 2..20 values
            page.get_by_test_id("upload").set_input_files(
                files=[{"name": "rows.csv", "mimeType": "text/csv", "buffer": _cancer_csv()}])  # type: ignore[arg-type]  # a FilePayload
            expect(page.get_by_test_id("audit-run")).to_be_enabled()
            page.get_by_test_id("audit-run").click()
            expect(page.get_by_test_id("audit-verdict")).to_have_text(
                re.compile("^(PASS|REVIEW|FAIL)$"), timeout=120_000)
            audit_href = page.get_by_test_id("download-audit").get_attribute("href")
            assert audit_href and audit_href.startswith("/api/audits/")
            expect(page.get_by_test_id("error")).to_be_hidden()
            assert errors == []
        finally:
            ctx.close()
    shot = tmp_path / "dashboard.png"
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    external = [u for u in requests if not u.startswith((server, "data:"))]
    assert external == [], f"the page fetched external resources: {external}"
