"""script_json: values inside <script> elements cannot end the element or open a comment."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from unveil.core.explanation import Explanation
from unveil.core.htmlsafe import script_json
from unveil.report.html import document, explanation_html
from unveil.text import attention_grid_html, tokens_html

HOSTILE = ["<!--<script>", "</script><b>x", "</SCRIPT ><uvx>", "a&b > c", "line\u2028sep\u2029", "\"q'"]


class _Scripts(HTMLParser):
    """What a browser-like parser sees: the text of each script element and every start tag."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.tags: list[str] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self._in = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.scripts[-1] += data


def _parse(page: str) -> _Scripts:
    p = _Scripts()
    p.feed(page)
    p.close()
    return p


def test_script_json_escapes_and_round_trips() -> None:
    obj = {"tokens": HOSTILE, "n": 3, "x": [1.5, None, True], "<key>": "&amp;"}
    text = script_json(obj)
    assert not re.search("[<>&\u2028\u2029]", text)
    assert "\\u003c/script\\u003e" in text and "\\u0026" in text and "\\u2028" in text
    assert json.loads(text) == obj
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        script_json([float("nan")])


def test_attention_grid_script_survives_hostile_tokens() -> None:
    probs = np.full((1, 2, len(HOSTILE), len(HOSTILE)), 1 / len(HOSTILE))
    page = attention_grid_html(probs, HOSTILE)
    raw = re.findall(r"<script>(.*?)</script>", page, re.DOTALL | re.IGNORECASE)
    assert len(raw) == 1 and page.lower().count("<script") == 1 and page.lower().count("</script") == 1
    assert "<" not in raw[0]
    start = raw[0].index("var tok=") + len("var tok=")
    tokens, end = json.JSONDecoder().raw_decode(raw[0], start)
    assert tokens == HOSTILE and not re.search("[<>&\u2028\u2029]", raw[0][start:end])
    parsed = _parse(page)
    assert parsed.scripts == raw and not {"b", "uvx"} & set(parsed.tags)  # no element injected


def test_pages_without_scripts_stay_without_scripts() -> None:
    frag = tokens_html(HOSTILE, np.linspace(-1, 1, len(HOSTILE)), full=True)
    exp = Explanation(values=np.ones((1, len(HOSTILE))), inputs=np.zeros((1, len(HOSTILE))),
                      method="saliency", targets=np.array([1]), feature_names=HOSTILE,
                      class_names=HOSTILE[:2])
    report = document(explanation_html(exp), title=HOSTILE[1])
    for page in (frag, report):
        parsed = _parse(page)
        assert "script" not in parsed.tags and "uvx" not in parsed.tags
        assert not any(h in page for h in HOSTILE[:3])


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_attention_grid_script_runs_and_sees_the_tokens(tmp_path) -> None:
    probs = np.full((1, 1, len(HOSTILE), len(HOSTILE)), 1 / len(HOSTILE))
    body = re.findall(r"<script>(.*?)</script>", attention_grid_html(probs, HOSTILE), re.DOTALL)[0]
    probe = body.replace("var tok=", "var tok=globalThis.seen=", 1)
    js = ("globalThis.document={getElementById:function(){return {}},"
          "querySelectorAll:function(){return []}};\n" + probe
          + "\nprocess.stdout.write(JSON.stringify(globalThis.seen));")
    (tmp_path / "page.js").write_text(js, encoding="utf-8")
    res = subprocess.run(["node", str(tmp_path / "page.js")], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == HOSTILE


def test_every_inline_script_in_the_package_goes_through_script_json() -> None:
    """A guard for new pages: a module writing a <script> element must use script_json, and
    templates may only load scripts from files (no inline code to put values in)."""
    import unveil

    root = Path(unveil.__file__).parent
    writers = [p for p in root.rglob("*.py") if "<script" in p.read_text(encoding="utf-8").lower()]
    assert writers, "the attention grid page writes a script; the scan found nothing"
    for p in writers:
        assert "script_json(" in p.read_text(encoding="utf-8"), f"{p} writes a <script> without script_json"
    for p in [*root.rglob("*.html"), *root.rglob("*.j2")]:
        for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", p.read_text(encoding="utf-8"), re.S | re.I):
            assert "src=" in m.group(1) and not m.group(2).strip(), f"inline script in {p}"
