"""``unveil generate``: prints each generated token with its top sources, writes pages."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tests.language._lm_models import smollm2_or_skip, tiny_llama, tiny_tokenizer

from unveil.cli import cli


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_lm")
    tiny_llama().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_generate_prints_tokens_and_sources(saved, tmp_path):
    page = tmp_path / "g.html"
    r = CliRunner().invoke(cli, ["generate", "-m", saved, "--prompt", "When Mary and John went",
                                 "--max-new-tokens", "2", "-o", "n_steps=8", "--out", str(page)])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[0].startswith("generated: "), r.output
    assert sum(" <- " in ln for ln in lines) == 2
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Where each generated token came from" in html


def test_generate_json_and_contrast(saved, tmp_path):
    r = CliRunner().invoke(cli, ["generate", "-m", saved, "--prompt", "When Mary and John went",
                                 "--continuation", " to", "--contrast", " and",
                                 "--method", "feature_ablation", "--json",
                                 "--out", str(tmp_path / "g.json")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    assert data["generated"] == " to" and data["objective"] == "log_prob_diff"
    assert len(data["tokens"][0]["sources"]) == 3
    saved_res = json.loads((tmp_path / "g.json").read_text())
    assert saved_res["format"] == "unveil.generation/1"


def test_generate_errors_are_one_line(saved):
    from unveil.cli import main

    runner = CliRunner()
    r = runner.invoke(cli, ["generate", "-m", saved, "--prompt", "x", "--out", "g.png"])
    assert r.exit_code == 2 and "--out" in r.output
    with pytest.raises(SystemExit) as ex:
        main(["generate", "-m", "zoo:nothing", "--prompt", "hello"])
    assert ex.value.code == 1
    with pytest.raises(SystemExit) as ex:
        main(["generate", "-m", saved, "--prompt", " "])
    assert ex.value.code == 1


def test_generate_with_smollm2_from_the_zoo(monkeypatch):
    model, tok = smollm2_or_skip()
    from unveil.zoo import language

    entry = language.LanguageZooModel("smollm2", lambda: (model, tok), "cached for the test")
    monkeypatch.setitem(language.LANGUAGE_ZOO, "smollm2", entry)
    r = CliRunner().invoke(cli, ["generate", "-m", "zoo:smollm2", "--prompt",
                                 "When Mary and John went to the store, John gave a drink to",
                                 "--max-new-tokens", "1", "--contrast", " John",
                                 "-o", "n_steps=8"])
    assert r.exit_code == 0, r.output
    assert "generated: ' Mary'" in r.output
