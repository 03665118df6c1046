"""POST /api/training-data: the library's scores, shown with the rows and labels; clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from unveil.data_attribution import training_influence
from unveil.frontends import LoadedModel
from unveil.serve import create_app


def _app(labels: bool) -> tuple[object, torch.nn.Module, np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    app = create_app(models={"m": LoadedModel(net, name="m", class_names=["no", "yes"],
                                              feature_names=[f"f{j}" for j in range(5)])},
                     samples={"m": x}, zoo=False)
    if labels:
        app.state.store.entries["m"].table_labels = y.numpy()
    return app, net, x.numpy(), y.numpy()


def test_route_shows_the_library_scores_with_rows_and_labels() -> None:
    app, net, x, y = _app(labels=True)
    with TestClient(app) as c:  # type: ignore[arg-type]
        r = c.post("/api/training-data", json={"model": "m", "sample": 3, "method": "influence", "k": 3})
    assert r.status_code == 200, r.text
    d = r.json()
    xt = torch.from_numpy(x)
    decided = net(xt[3:4]).argmax(1)
    ref = training_influence(net, (xt, torch.from_numpy(y)), xt[3:4], decided, method="influence", params="last")
    want = ref.top(0, 3)
    assert [p["index"] for p in d["proponents"]] == [p["index"] for p in want["proponents"]]
    assert [o["index"] for o in d["opponents"]] == [o["index"] for o in want["opponents"]]
    first = d["proponents"][0]
    assert first["label_name"] == ["no", "yes"][int(y[first["index"]])]
    assert [v["name"] for v in first["values"]] == [f"f{j}" for j in range(5)]
    np.testing.assert_allclose([v["value"] for v in first["values"]], x[first["index"]], rtol=1e-6)
    assert d["target_name"] == ["no", "yes"][int(decided)]
    assert "loo_correlation" in d["evaluation"] and "correlation" in d["evaluation_words"]


@pytest.mark.parametrize("body,status,fragment", [
    ({"model": "m", "sample": 0}, 422, "--label-column"),
    ({"model": "m", "sample": 99}, 404, "out of range"),
    ({"model": "nope", "sample": 0}, 404, "no model named"),
    ({"model": "m", "sample": 0, "method": "shap"}, 422, "method"),
])
def test_route_refuses_clearly(body: dict[str, object], status: int, fragment: str) -> None:
    app, _, _, _ = _app(labels=False)
    with TestClient(app) as c:  # type: ignore[arg-type]
        r = c.post("/api/training-data", json=body)
    assert r.status_code == status and fragment in r.json()["detail"], r.text
