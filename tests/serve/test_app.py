"""The dashboard's API through Starlette's TestClient: results, limits, and refusals."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import unveil as uv
from _util import mlp
from report._check import check_self_contained
from unveil.frontends import LoadedModel
from unveil.report._stats import spearman
from unveil.report.render import map_for_agreement

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from unveil.serve import create_app  # noqa: E402

LIMIT = 64 * 1024
STATIC = Path(uv.__file__).parent / "serve"


@pytest.fixture(scope="module")
def client():
    torch.manual_seed(0)
    extra = {"mlp": LoadedModel(mlp(n_in=6, n_out=3).eval(), name="mlp", class_names=["a", "b", "c"])}
    app = create_app(models=extra, samples={"mlp": torch.randn(5, 6)}, max_upload_bytes=LIMIT,
                     max_rows=10)
    with TestClient(app) as c:
        yield c


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_models_methods_samples(client) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert set(models) == {"digits_cnn", "breast_cancer_mlp", "marked_digits_cnn", "mlp"}
    assert models["digits_cnn"]["modality"] == "image" and models["mlp"]["n_samples"] == 5
    methods = {m["name"]: m for m in client.get("/api/models/breast_cancer_mlp/methods").json()}
    assert set(methods) == {m.name for m in uv.methods()}
    for m in uv.methods():
        assert methods[m.name]["applies"] == ("tabular" in m.modalities)
    cnn = {m["name"]: m for m in client.get("/api/models/digits_cnn/methods").json()}
    for m in uv.methods():  # an image model without attention layers: no attention methods
        assert cnn[m.name]["applies"] == ("image" in m.modalities and m.family != "attention"), m.name
    assert cnn["attention_rollout"]["reason"] == "the model has no attention layers"
    page = client.get("/api/models/digits_cnn/samples", params={"offset": 2, "limit": 3}).json()
    assert [s["index"] for s in page["items"]] == [2, 3, 4]
    assert page["items"][0]["thumbnail"].startswith("data:image/png;base64,")
    assert client.get("/api/models/nope/samples").status_code == 404


def test_explain_a_sample_and_download(client) -> None:
    r = client.post("/api/explain", json={"model": "digits_cnn", "sample": 3,
                                          "methods": ["saliency", "integrated_gradients"]})
    assert r.status_code == 200, r.text
    res = r.json()
    data = uv.zoo.load_dataset("digits_cnn")
    with torch.no_grad():
        probs = torch.softmax(uv.zoo.digits_cnn()(data.X_test[3:4]), 1)[0]
    assert res["prediction"]["label"] == data.class_names[int(probs.argmax())]
    assert res["prediction"]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert [m["status"] for m in res["maps"]] == ["ok", "ok"]
    assert all(m["image"].startswith("data:image/png;base64,") for m in res["maps"])
    assert res["input_image"] and res["narrative"].startswith("The model predicts")
    # the agreement shown is the Spearman correlation of the two maps' pooled magnitudes
    exps = client.app.state.store.run(res["run"]).explanations
    want = spearman(map_for_agreement(exps["saliency"], 0), map_for_agreement(exps["integrated_gradients"], 0))
    assert res["agreement"] == pytest.approx(want)
    rep = client.get(f"/api/runs/{res['run']}/report")
    assert rep.status_code == 200 and "attachment" in rep.headers["content-disposition"]
    check_self_contained(rep.text, min_images=3)


def test_explanation_download_round_trips(client, tmp_path) -> None:
    res = client.post("/api/explain", json={"model": "mlp", "sample": 1, "methods": ["saliency"],
                                            "target": 2}).json()
    npz = client.get(f"/api/runs/{res['run']}/explanations/saliency")
    assert npz.status_code == 200 and npz.headers["content-type"] == "application/octet-stream"
    (tmp_path / "e.npz").write_bytes(npz.content)
    exp = uv.load(tmp_path / "e.npz")
    ref = client.app.state.store.run(res["run"]).explanations["saliency"]
    assert np.array_equal(exp.values, ref.values) and exp.targets.tolist() == [2]
    assert client.get(f"/api/runs/{res['run']}/explanations/lime").status_code == 404
    assert client.get("/api/runs/0123456789abcdef/report").status_code == 404
    assert client.get("/api/runs/..%2F..%2Fetc/report").status_code in (404, 422)


def test_upload_png_then_explain_it(client) -> None:
    data = uv.zoo.load_dataset("digits_cnn")
    img = (data.X_test[5, 0].numpy() * 255).round().astype(np.uint8)
    up = client.post("/api/models/digits_cnn/uploads", content=_png(img))
    assert up.status_code == 201, up.text
    info = up.json()
    assert info["kind"] == "image" and info["shape"] == [1, 1, 32, 32]
    res = client.post("/api/explain", json={"model": "digits_cnn", "upload": info["id"],
                                            "methods": ["saliency"]}).json()
    x = torch.from_numpy(img.astype(np.float32) / 255)[None, None]
    assert res["prediction"]["label"] == data.class_names[int(uv.zoo.digits_cnn()(x).argmax())]
    # an upload belongs to its model
    r = client.post("/api/explain", json={"model": "breast_cancer_mlp", "upload": info["id"],
                                          "methods": ["saliency"]})
    assert r.status_code == 404 and "no upload" in r.json()["detail"]


def test_upload_csv_rows(client) -> None:
    rows = "\n".join(",".join(str(v) for v in r) for r in np.random.default_rng(0).normal(size=(3, 6)))
    up = client.post("/api/models/mlp/uploads", content=rows.encode())
    assert up.status_code == 201 and up.json()["rows"] == 3
    r = client.post("/api/explain", json={"model": "mlp", "upload": up.json()["id"], "row": 2,
                                          "methods": ["integrated_gradients"]})
    assert r.status_code == 200
    r = client.post("/api/explain", json={"model": "mlp", "upload": up.json()["id"], "row": 3,
                                          "methods": ["saliency"]})
    assert r.status_code == 404 and "row 3 is out of range" in r.json()["detail"]


def _npy(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


@pytest.mark.parametrize("model,body,status,fragment", [
    ("digits_cnn", b"\x89PNG\r\n\x1a\n" + b"\0" * (LIMIT + 10), 413, "too large: the limit is 65536 bytes"),
    ("mlp", _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), 422, "never loaded"),
    ("mlp", bytes(range(128, 256)) * 4, 415, "unsupported upload"),
    ("mlp", _npy(np.zeros((2, 5), np.float32)), 422, "takes (6,)"),
    ("mlp", b"1,2,3,4,5,nan\n", 422, "NaN or infinite"),
    ("mlp", b"1,2,3,4,5,x\n", 422, "row 1, column 6 is not a number"),
    ("mlp", _npy(np.zeros((11, 6), np.float32)), 413, "at most 10"),
    ("mlp", b"", 422, "empty"),
    ("breast_cancer_mlp", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, 415, "not images"),
    ("digits_cnn", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, 422, "not a readable image"),
    ("nope", b"1", 404, "no model named"),
])
def test_upload_limits_and_types(client, model, body, status, fragment) -> None:
    r = client.post(f"/api/models/{model}/uploads", content=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_chunked_upload_over_the_limit_is_cut(client) -> None:
    def chunks():
        for _ in range(20):
            yield b"1" * 8192  # 160 KiB in total, sent without a Content-Length

    r = client.post("/api/models/mlp/uploads", content=chunks())
    assert r.status_code == 413


def test_json_body_limit_and_validation(client) -> None:
    r = client.post("/api/explain", content=b'{"model": "' + b"a" * 70_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    bad = [
        ({"model": "mlp", "methods": ["saliency"]}, 422, "exactly one of"),
        ({"model": "mlp", "sample": 0, "upload": "0123456789abcdef", "methods": ["saliency"]}, 422, "exactly one of"),
        ({"model": "mlp", "sample": 99, "methods": ["saliency"]}, 404, "out of range"),
        ({"model": "mlp", "sample": 0, "methods": ["salincy"]}, 422, "no method named 'salincy'"),
        ({"model": "mlp", "sample": 0, "methods": ["saliency"], "target": 3}, 422, "target 3 is out of range"),
        ({"model": "mlp", "sample": 0, "methods": []}, 422, None),
        ({"model": "../etc/passwd", "sample": 0, "methods": ["saliency"]}, 422, None),
        ({"model": "mlp", "sample": 0, "methods": ["saliency"], "path": "/etc"}, 422, None),
    ]
    for body, status, fragment in bad:
        r = client.post("/api/explain", json=body)
        assert r.status_code == status, (body, r.text)
        if fragment:
            assert fragment in r.json()["detail"]


def test_not_applicable_methods_are_skipped_not_errors(client) -> None:
    res = client.post("/api/explain", json={"model": "digits_cnn", "sample": 0,
                                            "methods": ["attention_rollout", "saliency"]}).json()
    status = {m["method"]: m["status"] for m in res["maps"]}
    assert status == {"attention_rollout": "skipped", "saliency": "ok"}


def test_metrics_come_from_the_trust_card(client) -> None:
    metrics = pytest.importorskip("unveil.metrics")
    res = client.post("/api/explain", json={"model": "mlp", "sample": 2,
                                            "methods": ["saliency", "integrated_gradients"]}).json()
    rows = {m["method"]: m for m in res["metrics"]}
    exp = client.app.state.store.run(res["run"]).explanations["saliency"]
    ref = metrics.trust_card(client.app.state.store.entries["mlp"]._model, exp,
                             checks=["faithful"], seed=0).verdicts["faithful"]
    assert rows["saliency"]["verdicts"]["faithful"] == ref.answer
    assert rows["saliency"]["figures"]["deletion_auc"] == pytest.approx(ref.figures["deletion_auc"])
    off = client.post("/api/explain", json={"model": "mlp", "sample": 2, "methods": ["saliency"],
                                            "evaluate": False}).json()
    assert off["metrics"][0]["verdicts"] == {}


def test_sanity_endpoint_answers(client) -> None:
    r = client.post("/api/sanity", json={"model": "mlp", "sample": 0, "method": "saliency"})
    assert r.status_code == 200
    body = r.json()
    try:
        from unveil.metrics import sanity_check  # noqa: F401
    except ImportError:
        assert body["available"] is False and "unveil.metrics" in body["note"]
    else:
        assert body["available"] is True and isinstance(body["passed"], bool)


def test_host_header_and_security_headers(client) -> None:
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    r = client.get("/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/docs").status_code == 404  # Swagger UI would load a CDN


def test_page_and_assets_are_offline(client) -> None:
    page = client.get("/").text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert srcs and all(s.startswith(("/static/", "data:")) for s in srcs)
    for s in srcs:
        if s.startswith("/static/"):
            assert client.get(s).status_code == 200
    for f in [*(STATIC / "static").glob("*.*"), *(STATIC / "templates").glob("*")]:
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(?i)https?:|//cdn|@import|url\(", text), f


def test_openapi_schema_is_published(client) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/api/models", "/api/explain", "/api/models/{model}/uploads",
                 "/api/runs/{run}/report", "/api/sanity"):
        assert path in schema["paths"], path


def test_methods_that_need_a_background_get_training_rows(client) -> None:
    names = {m.name for m in uv.methods("tabular")}
    if "gradient_shap" not in names:
        pytest.skip("gradient_shap is not registered")
    res = client.post("/api/explain", json={"model": "breast_cancer_mlp", "sample": 0,
                                            "methods": ["gradient_shap"], "evaluate": False}).json()
    assert res["maps"][0]["status"] == "ok", res["maps"][0]["note"]
    run = client.app.state.store.run(res["run"]).sections[0].runs[0]
    bg = uv.zoo.load_dataset("breast_cancer_mlp").X_train[:32]
    assert torch.equal(run.options["background"], bg)


def test_attention_methods_apply_only_to_models_with_attention() -> None:
    from torch import nn

    from unveil.serve._routes import _has_attention

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    assert _has_attention(Tiny()) is True
    assert _has_attention(nn.Sequential(nn.Linear(4, 2))) is False
    assert _has_attention(lambda a: a) is None  # not a torch module: left to the modality check


def test_rows_outside_the_models_data_are_flagged_beside_the_prediction(client) -> None:
    """The zoo's breast-cancer rows in their own units are within the data; the same rows
    standardised (a mistake a user makes) are flagged, in words, beside the prediction."""
    data = uv.zoo.load_dataset("breast_cancer_mlp")
    raw = data.X_test[:2].numpy()
    std = (raw - data.X_train.numpy().mean(0)) / data.X_train.numpy().std(0)
    for rows, flagged in ((raw, False), (std, True)):
        text = "\n".join(",".join(f"{v:.6g}" for v in r) for r in rows)
        up = client.post("/api/models/breast_cancer_mlp/uploads", content=text.encode())
        assert up.status_code == 201, up.text
        r = client.post("/api/explain", json={"model": "breast_cancer_mlp", "upload": up.json()["id"],
                                              "row": 0, "methods": ["saliency"], "evaluate": False})
        assert r.status_code == 200, r.text
        warning = r.json()["prediction"]["outside_data"]
        assert (warning is not None) == flagged
        if flagged:
            assert "outside the data the model knows" in warning and "(the data spans" in warning
