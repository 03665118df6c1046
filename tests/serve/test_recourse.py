"""The recourse routes in-process: ``POST /api/counterfactual`` and ``POST /api/anchor`` on a
user's model with its data (a text column coded by a preprocess object, a column the model does
not read) and on a plain linear table model. Every returned counterfactual is checked against
the model itself and against the constraints asked for, never against the route's own figures."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from _user_files import REGIONS, credit_rows, write_user_files  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from unveil.frontends import LoadedModel, load_model, load_object  # noqa: E402
from unveil.serve import ServedModel, create_app  # noqa: E402


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("user")
    write_user_files(d)
    sys.path.insert(0, str(d))
    cwd = os.getcwd()
    os.chdir(d)
    try:
        lm = load_model("usermodel:credit_mlp")
        pre = load_object("usermodel:preprocess", "preprocess")
        served = ServedModel(lm, data=str(d / "credit.csv"), label_column="approved",
                             class_names="rejected,approved", preprocess=pre)
        # a plain linear model of six numbers, with its rows as samples (no preprocess)
        torch.manual_seed(0)
        lin = torch.nn.Linear(6, 2).eval()
        rows = torch.from_numpy(np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
        rows[:, 5] = torch.arange(40) % 3  # whole numbers: stay whole
        app = create_app(models={"credit": served, "lin": LoadedModel(lin, name="lin", class_names=["no", "yes"])},
                         samples={"lin": rows}, zoo=False)
        with TestClient(app) as c:
            yield c, lm.model, pre, lin, rows.numpy().astype(np.float64)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(d))


def _decide(model: torch.nn.Module, x: np.ndarray) -> int:
    with torch.no_grad():
        return int(model(torch.as_tensor(x, dtype=torch.float32).reshape(1, -1)).argmax(1))


def test_the_change_flips_the_model_and_reads_in_the_data_words(user: Any) -> None:
    c, net, pre, _, _ = user
    rows = credit_rows()
    i = next(k for k, r in enumerate(rows) if r[4] == "rejected" and float(r[0]) < -0.5 and float(r[1]) > 0.5)
    r = c.post("/api/counterfactual", json={"model": "credit", "sample": i, "n_counterfactuals": 3,
                                            "increasing": ["income"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["found"] and out["decision"] == "rejected" and out["desired"] == "approved"
    assert out["recourse"].startswith("Had ") and "\u201capproved\u201d instead of \u201crejected\u201d" in out["recourse"]
    assert out["fixed"] == ["group"] and "region" in out["categorical"]
    res = out["result"]
    names = res["feature_names"]
    x = np.array(res["rows"][0]["input"])
    assert len(out["options"]) == len(res["rows"][0]["counterfactuals"]) >= 1
    for opt, cf in zip(out["options"], res["rows"][0]["counterfactuals"]):
        z = np.array(cf["values"])
        assert _decide(net, pre(z[None])) == 1  # the model itself approves the changed row
        assert z[names.index("group")] == x[names.index("group")]  # not read: never changed
        assert z[names.index("income")] >= x[names.index("income")]  # only up
        assert z[names.index("region")] in range(len(REGIONS))
        assert opt["valid"] and opt["violations"] == 0 and opt["decision"] == "approved"
        for ch in opt["changes"]:
            j = names.index(ch["column"])
            assert z[j] != x[j]
            if ch["column"] == "region":  # words, never codes
                assert ch["before"] == REGIONS[int(x[j])] and ch["after"] == REGIONS[int(z[j])]
        assert {ch["column"] for ch in opt["changes"]} == {n for j, n in enumerate(names) if z[j] != x[j]}


def test_the_what_if_edits_are_the_starting_row(user: Any) -> None:
    c, *_ = user
    base = c.post("/api/counterfactual", json={"model": "credit", "sample": 0}).json()
    edited = c.post("/api/counterfactual", json={"model": "credit", "sample": 0,
                                                 "values": {"income": 2.5, "region": "west"}}).json()
    names = edited["result"]["feature_names"]
    x = edited["result"]["rows"][0]["input"]
    assert x[names.index("income")] == 2.5 and x[names.index("region")] == REGIONS.index("west")
    assert base["result"]["rows"][0]["input"] != x


def test_fixing_every_column_the_model_reads_finds_nothing_and_says_so(user: Any) -> None:
    c, net, pre, _, _ = user
    r = c.post("/api/counterfactual", json={"model": "credit", "sample": 1,
                                            "immutable": ["income", "debt", "region"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert not out["found"] and out["options"] == []
    assert out["status"] == "no counterfactual within these constraints"
    assert out["recourse"].startswith("No change within these constraints")
    assert out["closest"] is not None and not out["closest"]["valid"]
    assert out["result"]["metrics"]["validity"] == 0.0


def test_linear_model_ranges_directions_and_whole_numbers(user: Any) -> None:
    c, _, _, lin, rows = user
    r = c.post("/api/counterfactual", json={"model": "lin", "sample": 2, "n_counterfactuals": 2,
                                            "immutable": ["x0"], "decreasing": ["x1"],
                                            "ranges": {"x2": {"low": -0.5, "high": 0.5}}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert "x5" in out["integer"] and "x5" in out["categorical"]  # three whole values: one of them
    x = rows[2]
    assert out["found"]
    for cf in out["result"]["rows"][0]["counterfactuals"]:
        z = np.array(cf["values"])
        assert _decide(lin, z) != _decide(lin, x)
        assert z[0] == x[0] and z[1] <= x[1] and z[5] in (0.0, 1.0, 2.0)
        if z[2] != x[2]:
            assert -0.5 <= z[2] <= 0.5
        lo, hi = rows.min(axis=0), rows.max(axis=0)  # other columns: within the data's range
        moved = z != x
        assert np.all((z[moved] >= lo[moved] - 1e-9) | (np.arange(6)[moved] == 2))
        assert np.all((z[moved] <= hi[moved] + 1e-9) | (np.arange(6)[moved] == 2))


def test_anchor_keeps_the_decision_on_fresh_samples(user: Any) -> None:
    c, net, pre, _, _ = user
    r = c.post("/api/anchor", json={"model": "credit", "sample": 0, "threshold": 0.9})
    assert r.status_code == 200, r.text
    a = r.json()
    assert 0.0 <= a["coverage"] <= 1.0 and a["threshold"] == 0.9
    assert a["valid"] and a["precision"] >= 0.9
    assert "group" not in a["features"]  # the model does not read it: it anchors nothing
    assert a["sentence"].startswith("As long as") and a["decision"] in ("rejected", "approved")
    for p in a["predicates"]:
        if p.startswith("region"):
            assert p.split(" = ")[1] in REGIONS


@pytest.mark.parametrize(("body", "says"), [
    ({"immutable": ["incme"]}, "no column named 'incme'"),
    ({"increasing": ["income"], "decreasing": ["income"]}, "both only-up and only-down"),
    ({"ranges": {"income": {"low": 2, "high": 1}}}, "low 2 is above high 1"),
    ({"desired": 5}, "out of range"),
    ({"values": {"region": "mars"}}, "takes one of north, south, east, west"),
    ({"n_counterfactuals": "2"}, "n_counterfactuals"),
    ({"n_counterfactuals": 9}, "n_counterfactuals"),
    ({"ranges": {"income": {"low": 1, "hi": 2}}}, "hi"),
])
def test_bad_requests_are_422_saying_what_to_do(user: Any, body: dict[str, Any], says: str) -> None:
    c, *_ = user
    r = c.post("/api/counterfactual", json={"model": "credit", "sample": 0, **body})
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]


def test_inputs_that_are_not_table_rows_are_refused(user: Any) -> None:
    c, *_ = user
    assert c.post("/api/counterfactual", json={"model": "nope", "sample": 0}).status_code == 404
    assert c.post("/api/anchor", json={"model": "credit", "sample": 10_000}).status_code == 404
    r = c.post("/api/anchor", json={"model": "credit", "sample": 0, "upload": "0" * 16})
    assert r.status_code == 422 and "exactly one" in r.json()["detail"]


def test_image_models_get_a_clear_422(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.zeros(1, 1, 8, 8))
    app = create_app(models={"cnn": LoadedModel(net.eval(), name="cnn")}, samples={"cnn": torch.zeros(2, 1, 8, 8)},
                     zoo=False)
    with TestClient(app) as c:
        r = c.post("/api/counterfactual", json={"model": "cnn", "sample": 0})
        assert r.status_code == 422 and "table models" in r.json()["detail"]
