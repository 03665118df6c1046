"""``unveil serve`` with the user's own model and data: the options reach the dashboard, and a bad
--data (or a table the model cannot take) is one error line naming the flag to change."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from starlette.testclient import TestClient  # noqa: E402

from test_cli import _main  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "serve"))
from _user_files import write_user_files  # noqa: E402

sys.path.pop(0)

MODEL = ["-m", "usermodel:credit_mlp"]
GOOD = ["--data", "credit.csv", "--label-column", "approved", "--preprocess", "usermodel:preprocess"]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    write_user_files(tmp_path, n=60)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "usermodel", raising=False)
    yield tmp_path
    sys.modules.pop("usermodel", None)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``uvicorn.run`` was given (the server is not started)."""
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    return seen


def _one_error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = _main(capsys, "serve", "--no-zoo", *args)
    lines = err.strip().splitlines()
    assert code in (1, 2), err
    assert len(lines) == 1 and lines[0].startswith(("unveil: error:", "Error:")), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("args,fragments", [
    (["--data", "missing.csv"], ["--data missing.csv", "no such file"]),
    (["--data", "model.h5"], ["--data model.h5", "unsupported data file", ".parquet"]),
    (["--data", "credit.csv"], ["text columns", "region", "--preprocess"]),
    (["--data", "numbers.csv"], ["has 5 columns; the model takes 6", "--preprocess"]),
    (["--data", "wide.csv"], ["has 7 columns; the model takes 6", "--feature-names"]),
    (["--data", "wide.csv", "--feature-names", "a,b,zz"], ["--feature-names names zz", "a, b, c, d, e, f, g"]),
    (["--data", "credit.csv", "--label-column", "nope", "--preprocess", "usermodel:preprocess"],
     ["no label column 'nope'", "--label-column", "income, debt"]),
    (["--data", "credit.csv", "--preprocess", "usermodel:nothing"], ["has no attribute 'nothing'", "--preprocess"]),
    (["--data", "bad.csv", "--preprocess", "usermodel:preprocess"], ["row 2", "'income'", "not a number"]),
])
def test_bad_data_is_one_line_naming_the_flag(folder: Path, capsys, served, args, fragments) -> None:
    rng = np.random.default_rng(0)
    np.savetxt(folder / "numbers.csv", rng.normal(size=(30, 5)), delimiter=",", header="a,b,c,d,e", comments="")
    np.savetxt(folder / "wide.csv", rng.normal(size=(30, 7)), delimiter=",", header="a,b,c,d,e,f,g", comments="")
    (folder / "bad.csv").write_text("income,debt,region,group\n1,2,north,a\nlots,2,north,b\n"
                                    + "".join(f"{k},1,south,a\n" for k in range(8)))
    (folder / "model.h5").write_bytes(b"\x89HDF")
    line = _one_error_line(capsys, *MODEL, *args)
    for f in fragments:
        assert f in line, line
    assert served == {}  # no server started


def test_data_options_without_a_model_are_refused(folder: Path, capsys, served) -> None:
    line = _one_error_line(capsys, "--data", "credit.csv")
    assert "--data" in line and "--model" in line


def test_serve_offers_the_model_with_its_data(folder: Path, capsys, served) -> None:
    code, out, err = _main(capsys, "serve", "--no-zoo", *MODEL, *GOOD, "--class-names", "rejected,approved",
                           "-m", "usermodel:plain_linear", "--port", "0")
    assert code == 0, err
    assert "unveil dashboard on http://127.0.0.1:0/" in out
    with TestClient(served["app"]) as c:
        models = {m["name"]: m for m in c.get("/api/models").json()}
        credit = models["usermodel:credit_mlp"]
        assert credit["modality"] == "tabular" and credit["n_samples"] == 60
        assert credit["class_names"] == ["rejected", "approved"]
        assert credit["feature_names"] == ["income", "debt", "region=north", "region=south",
                                           "region=east", "region=west"]  # the preprocess object's
        assert "not read by the model: group" in credit["description"]
        cols = c.get("/api/models/usermodel:credit_mlp/columns").json()
        assert cols[0] == {"name": "group", "n_values": 2, "kept_aside": True, "values": ["a", "b"]}
        assert {"name": "region", "n_values": 4, "kept_aside": False,
                "values": ["north", "south", "east", "west"]} in cols  # the object's own order
        assert models["usermodel:plain_linear"]["n_samples"] == 0  # --data is the first model's


TEXT_MODULE = '''
import torch
from torch import nn


class WordTokenizer:
    vocab = ["[PAD]", "[UNK]", "good", "bad", "movie", "a"]

    def __call__(self, texts, return_tensors="pt", padding=True, truncation=True):
        ids = [[self.vocab.index(w) if w in self.vocab else 1 for w in t.split()] for t in texts]
        n = max(len(r) for r in ids)
        return {"input_ids": torch.tensor([r + [0] * (n - len(r)) for r in ids])}

    def convert_ids_to_tokens(self, ids):
        return [self.vocab[i] for i in ids]


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(6, 4), nn.Flatten(), nn.LazyLinear(2))
'''


def test_a_text_model_with_a_tokenizer_flag(tmp_path: Path, monkeypatch, capsys, served) -> None:
    (tmp_path / "textmodel.py").write_text(TEXT_MODULE)
    (tmp_path / "texts.txt").write_text("a good movie\na bad movie\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "textmodel", raising=False)
    line = _one_error_line(capsys, "-m", "textmodel:model", "--data", "texts.txt")
    assert "texts need a tokenizer" in line and "--tokenizer" in line
    code, _, err = _main(capsys, "serve", "--no-zoo", "-m", "textmodel:model", "--data", "texts.txt",
                         "--tokenizer", "textmodel:WordTokenizer", "--class-names", "neg,pos")
    assert code == 0, err
    with TestClient(served["app"]) as c:
        m = c.get("/api/models").json()[0]
        assert (m["modality"], m["n_samples"]) == ("text", 2)
        assert c.get("/api/models/textmodel:model/samples").json()["items"][0]["preview"] == "a good movie"
    sys.modules.pop("textmodel", None)
