"""The dashboard's model-level views: surrogate figures equal the library's, the audit's
figures equal a direct count, and requests that cannot work are refused with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import unveil as uv
from report._check import check_self_contained
from unveil.audit.examples import credit_scorer, synthetic_credit
from unveil.frontends import LoadedModel

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from unveil.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def credit():
    return synthetic_credit(400, seed=2)


@pytest.fixture(scope="module")
def client(credit):
    X, _, names = credit
    extra = {"credit": LoadedModel(credit_scorer(), name="credit", feature_names=names,
                                   class_names=["reject", "approve"])}
    app = create_app(models=extra, samples={"credit": torch.tensor(X, dtype=torch.float32)}, max_rows=10)
    with TestClient(app) as c:
        yield c


def test_distill_equals_the_library_on_the_models_rows(client):
    r = client.post("/api/distill", json={"model": "breast_cancer_mlp", "kind": "rules", "max_depth": 2})
    assert r.status_code == 200, r.text
    res = r.json()
    data = uv.zoo.load_dataset("breast_cancer_mlp")
    raw = torch.cat([data.X_train, data.X_test])  # the zoo's rows are in their own units
    sur = uv.distill(uv.zoo.breast_cancer_mlp(), raw, kind="rules", max_depth=2,
                     y=torch.cat([data.y_train, data.y_test]), feature_names=data.feature_names,
                     class_names=list(data.class_names))
    assert res["fidelity"] == pytest.approx(sur.fidelity()) and res["n_rows"] == 569
    assert res["held_out_rows"] == 142 and res["accuracy"] == pytest.approx(sur.held_out["accuracy"])
    assert [x["text"] for x in res["rules"]] == [str(rule) for rule in sur.rules()]
    assert res["text"] == sur.describe()
    assert [p["size"] for p in res["curve"]] == list(range(1, 7))
    assert res["curve"][1]["fidelity"] == pytest.approx(sur.fidelity())  # size 2 is this surrogate
    assert len(res["importance"]) == 10
    lin = client.post("/api/distill", json={"model": "breast_cancer_mlp", "kind": "linear"}).json()
    assert lin["rules"] == [] and lin["complexity_unit"] == "non-zero weights"


def test_audit_counts_groups_directly_and_keeps_the_page(client, credit):
    X, _, _ = credit
    assert client.get("/api/models/credit/columns").json() == [
        {"name": "gender", "n_values": 2, "kept_aside": False, "values": None}]
    r = client.post("/api/audit", json={"model": "credit", "sensitive": "gender"})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["verdict"] == "fail" and any("zip_area" in f for f in res["flags"])
    with torch.no_grad():
        approve = credit_scorer()(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy() == 1
    for g in (0, 1):
        assert res["selection_rates"][str(g)] == pytest.approx(approve[X[:, 4] == g].mean())
    page = client.get(f"/api/audits/{res['page']}")
    assert page.status_code == 200 and "attachment" in page.headers["content-disposition"]
    check_self_contained(page.text)
    assert client.get("/api/audits/0123456789abcdef").status_code == 404


def test_an_uploaded_table_is_used_for_model_level_views(client, credit):
    X, _, names = credit
    Xu = X[:200].copy()
    Xu[:, 3] = np.arange(200) % 3  # age binned into three groups
    buf = io.StringIO()
    np.savetxt(buf, Xu, delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    up = client.post("/api/models/credit/uploads", content=buf.getvalue().encode())
    assert up.status_code == 201, up.text  # tables may exceed max_rows=10
    uid = up.json()["id"]
    cols = client.get("/api/models/credit/columns", params={"upload": uid}).json()
    assert {c["name"] for c in cols} == {"gender", "age"}
    res = client.post("/api/audit", json={"model": "credit", "sensitive": "age", "upload": uid}).json()
    assert set(res["selection_rates"]) == {"0", "1", "2"}
    assert res["flip_rate"] == 0.0  # the scorer gives age no weight


@pytest.mark.parametrize("path,body,fragment", [
    ("/api/distill", {"model": "digits_cnn"}, "work on tables"),
    ("/api/audit", {"model": "credit", "sensitive": "religion"}, "no column named 'religion'"),
    ("/api/audit", {"model": "credit", "sensitive": "gender", "positive": 2}, "out of range"),
    ("/api/audit", {"model": "credit", "sensitive": "income"}, "2 to 20 groups"),
    ("/api/distill", {"model": "credit", "upload": "0123456789abcdef"}, "no upload"),
])
def test_refusals_say_why(client, path, body, fragment):
    r = client.post(path, json=body)
    assert r.status_code in (404, 422) and fragment in r.json()["detail"], r.text
