"""``unveil concepts crp`` and ``unveil concepts discover``: output, files, and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from report._check import check_self_contained
from unveil.cli import main
from unveil.concepts import load_concept_discovery, load_concept_relevance


def _main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_crp_prints_top_concepts_and_writes_html(capsys, tmp_path: Path) -> None:
    out = tmp_path / "crp.html"
    code, text, err = _main(capsys, "concepts", "crp", "-m", "zoo:digits_cnn", "-i", "zoo:digits_cnn",
                            "--rows", "0:2", "--layer", "features.6", "--top", "3", "--out", str(out))
    assert code == 0, err
    assert text.count("row ") == 2 and "features.6:" in text
    check_self_contained(out.read_text(encoding="utf-8"), min_images=8)


def test_crp_channels_json_and_npz(capsys, tmp_path: Path) -> None:
    out = tmp_path / "crp.npz"
    code, text, err = _main(capsys, "concepts", "crp", "-m", "zoo:digits_cnn", "-i", "zoo:digits_cnn",
                            "--rows", "0:1", "--layer", "features.6", "--channels", "1,2+3", "--json",
                            "--out", str(out))
    assert code == 0, err
    got = json.loads(text)
    assert [c["channels"] for c in got["rows"][0]["concepts"]] == [[1], [2, 3]]
    back = load_concept_relevance(out)
    assert back.heatmaps.shape[:2] == (1, 2)


def test_discover_ranks_concepts(capsys, tmp_path: Path) -> None:
    out = tmp_path / "disc.npz"
    code, text, err = _main(capsys, "concepts", "discover", "-m", "zoo:digits_cnn", "-i", "zoo:digits_cnn",
                            "--rows", "0:12", "--layer", "classifier.0", "--concepts", "3", "--designs", "4",
                            "--json", "--out", str(out))
    assert code == 0, err
    got = json.loads(text)
    imps = [c["importance"] for c in got["concepts"]]
    assert len(imps) == 3 and imps == sorted(imps, reverse=True)
    np.testing.assert_allclose(sorted(load_concept_discovery(out).importance, reverse=True), imps)


@pytest.mark.parametrize(("args", "fragment"), [
    (("crp", "--layer", "features.66"), "Closest names: features.6"),
    (("crp", "--layer", "features.6", "--channels", "64"), "channel 64 is out of range"),
    (("crp", "--layer", "features.6", "--channels", "a"), "--channels expects channel numbers"),
    (("discover", "--layer", "features.6"), "non-negative"),
])
def test_user_errors_are_one_line(capsys, args: tuple[str, ...], fragment: str) -> None:
    code, _, err = _main(capsys, "concepts", *args, "-m", "zoo:digits_cnn", "-i", "zoo:digits_cnn",
                         "--rows", "0:2")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("unveil: error: "), err
    assert fragment in lines[0]


def test_parse_channels() -> None:
    from unveil.errors import OptionError
    from unveil.frontends.concept_maps import parse_channels

    assert parse_channels("3,5+7") == [[3], [5, 7]]
    assert parse_channels(None) is None and parse_channels(" ") is None
    with pytest.raises(OptionError, match="e.g. 3,5\\+7"):
        parse_channels("3,x")
