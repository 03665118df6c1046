"""The concept-map routes: layers, top concepts with heat maps and references, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from _util import TinyCNN
from unveil.concepts import top_concepts
from unveil.frontends import LoadedModel
from unveil.serve import create_app


@pytest.fixture(scope="module")
def client():
    torch.manual_seed(0)
    net = TinyCNN().eval()
    samples = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    app = create_app(models={"cnn": LoadedModel(net, name="cnn", class_names=["a", "b", "c", "d"])},
                     samples={"cnn": samples}, zoo=False)
    with TestClient(app) as c:
        yield c, net, samples


def test_layers_lists_convolutions_and_dense_layers(client) -> None:
    c, _, _ = client
    got = c.get("/api/models/cnn/concept-layers").json()
    assert [(lay["name"], lay["channels"]) for lay in got["layers"]] == [
        ("features.0", 6), ("features.3", 8), ("head.1", 4)]
    assert got["default"] == "features.3"


def test_top_concepts_match_the_library(client) -> None:
    c, net, samples = client
    r = c.post("/api/concepts", json={"model": "cnn", "sample": 2, "layer": "features.3", "k": 3})
    assert r.status_code == 200, r.text
    got = r.json()
    want = top_concepts(net, samples[2:3], layer="features.3", k=3)
    assert [k["channel"] for k in got["concepts"]] == [ch[0] for ch in want.concepts[0]]
    np.testing.assert_allclose([k["relevance"] for k in got["concepts"]],
                               [v for _, v in want.top(0, 3)], rtol=1e-5)
    assert all(k["heatmap"].startswith("data:image/png;base64,") for k in got["concepts"])
    assert got["input_image"].startswith("data:image/png") and got["target"] == "abcd"[int(want.targets[0])]


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"layer": "features.9"}, 422, "choose one of: features.0, features.3, head.1"),
    ({"layer": "features.3", "target": 7}, 422, "target 7 is out of range"),
    ({"layer": "features.3", "sample": 99}, 404, "index 99 is out of range"),
    ({"layer": "features.3", "k": 0}, 422, ""),
    ({"layer": "features.3", "extra": 1}, 422, ""),
])
def test_bad_requests_are_refused(client, body, status, fragment) -> None:
    c, _, _ = client
    r = c.post("/api/concepts", json={"model": "cnn", "sample": 0, **body})
    assert r.status_code == status and fragment in r.json()["detail"]
