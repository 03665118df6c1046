"""The dashboard on a user's own model and data (``ServedModel``): which methods it offers, the
columns kept aside, what-if edits, and the session's report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from unveil.errors import InputError  # noqa: E402
from unveil.serve import ServedModel, create_app  # noqa: E402
from unveil.serve._data import has_spatial_layers, used_columns  # noqa: E402


def _linear(w: list[float]) -> nn.Linear:
    """Two logits whose difference (class 1 minus class 0) is ``w @ x``."""
    lin = nn.Linear(len(w), 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[1] = torch.tensor(w)
    return lin.eval()


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.conv(x)).flatten(1))
        return out


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    sex = rng.integers(0, 2, 80).astype(np.float64)
    return np.column_stack([X[:, 0], sex, X[:, 1], X[:, 2]]), ["a", "sex", "b", "c"]


@pytest.fixture(scope="module")
def client(table):
    X, names = table
    import pandas as pd

    df = pd.DataFrame(X, columns=names)
    df["sex"] = np.where(X[:, 1] == 1, "f", "m")
    models = {
        "lin": ServedModel(_linear([2.0, -1.0, 0.0]), data=df, feature_names=["a", "b", "c"],
                           class_names=["no", "yes"]),
        "plain": nn.Linear(6, 2).eval(),
        "mlp": ServedModel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval(), data=X),
        "cnn": TinyCNN().eval(),
    }
    app = create_app(models=models, zoo=False, samples={"cnn": torch.rand(4, 1, 8, 8)})
    with TestClient(app) as c:
        yield c


def test_cams_are_offered_only_for_models_with_spatial_layers(client) -> None:
    for name in ("plain", "lin"):
        ms = {m["name"]: m for m in client.get(f"/api/models/{name}/methods").json()}
        cams = [m for m in ms.values() if m["family"] == "cam"]
        assert cams and not any(m["applies"] for m in cams)
        assert ms["integrated_gradients"]["applies"]
    cnn = {m["name"]: m for m in client.get("/api/models/cnn/methods").json()}
    assert cnn["grad_cam"]["applies"] and not cnn["attention_rollout"]["applies"]
    assert has_spatial_layers(TinyCNN()) is True and has_spatial_layers(nn.Linear(3, 2)) is False
    assert has_spatial_layers(lambda x: x) is None
    # an nn.Linear without data is a table model (its upload is a table, not "unsupported")
    plain = next(m for m in client.get("/api/models").json() if m["name"] == "plain")
    assert plain["modality"] == "tabular"


def test_the_extra_column_is_kept_aside(client, table) -> None:
    X, _ = table
    lin = next(m for m in client.get("/api/models").json() if m["name"] == "lin")
    assert lin["feature_names"] == ["a", "b", "c"] and lin["n_samples"] == 80
    assert "not read by the model: sex" in lin["description"]
    cols = client.get("/api/models/lin/columns").json()
    assert cols == [{"name": "sex", "n_values": 2, "kept_aside": True, "values": ["f", "m"]}]
    inp = client.get("/api/models/lin/input", params={"sample": 3}).json()
    assert [(c["name"], c["used"]) for c in inp["cells"]] == [("a", True), ("sex", False), ("b", True), ("c", True)]
    assert inp["cells"][0]["value"] == pytest.approx(X[3, 0])
    r = client.post("/api/audit", json={"model": "lin", "sensitive": "sex"})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["flip_rate"] == 0.0  # the model does not read it: changing it flips nothing
    f = X[:, 1] == 1  # coded f=0, m=1 (sorted); the model says "yes" when 2a - b > 0
    yes = 2 * X[:, 0] - X[:, 2] > 0
    assert res["selection_rates"]["0"] == pytest.approx(yes[f].mean())
    assert res["selection_rates"]["1"] == pytest.approx(yes[~f].mean())


def test_used_columns_finds_what_preprocess_reads() -> None:
    X = np.arange(12.0).reshape(4, 3)
    assert used_columns(lambda r: r[:, [0, 2]] * 2, X) == [True, False, True]
    assert used_columns(lambda r: np.eye(3)[r[:, 1].astype(int) % 3], X) == [False, True, False]


def _softmax_yes(z: float) -> float:
    return float(1 / (1 + np.exp(-z)))


def test_whatif_values_change_the_prediction_as_the_weights_say(client, table) -> None:
    X, _ = table
    i = int(np.argmin(2 * X[:, 0] - X[:, 2]))  # the row the model is surest says "no" to
    r = client.post("/api/whatif", json={"model": "lin", "sample": i, "methods": ["integrated_gradients"],
                                         "edit": {"kind": "values", "values": {"a": 2.5, "sex": "f"}}})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["before"]["label"] == "no"
    assert res["before"]["probability"] == pytest.approx(1 - _softmax_yes(2 * X[i, 0] - X[i, 2]), abs=1e-6)
    after = res["result"]["prediction"]
    p_yes = _softmax_yes(2 * 2.5 - X[i, 2])
    assert after["label"] == ("yes" if p_yes > 0.5 else "no")
    assert after["probability"] == pytest.approx(max(p_yes, 1 - p_yes), abs=1e-6)
    assert res["changes"][0].startswith("a: ") and res["changes"][0].endswith("→ 2.5")
    # IG of a linear model from a zero baseline: w * x; the edited a = 2.5 gets 2 * 2.5 for "yes"
    run = client.app.state.store.run(res["result"]["run"])
    exp = run.explanations["integrated_gradients"]
    assert float(exp.values[0, 0]) == pytest.approx(5.0 if p_yes > 0.5 else -5.0, rel=1e-3)


@pytest.mark.parametrize("values,fragment", [
    ({"z": 1.0}, "no column named 'z'"),
    ({"sex": "x"}, "takes one of f, m"),
    ({"a": "lots"}, "takes a number"),
])
def test_whatif_refuses_bad_edits(client, values, fragment) -> None:
    r = client.post("/api/whatif", json={"model": "lin", "sample": 0, "methods": ["saliency"],
                                         "edit": {"kind": "values", "values": values}})
    assert r.status_code == 422 and fragment in r.json()["detail"], r.text


def test_whatif_paints_an_image_region(client) -> None:
    store = client.app.state.store
    x = store.entries["cnn"].samples[1]
    r = client.post("/api/whatif", json={"model": "cnn", "sample": 1, "methods": ["saliency"],
                                         "edit": {"kind": "rect", "top": 2, "left": 1, "bottom": 5, "right": 7,
                                                  "fill": "zero"}})
    assert r.status_code == 200, r.text
    edited = torch.from_numpy(store.run(r.json()["result"]["run"]).sections[0].inputs[0])
    want = x.clone()
    want[:, 2:5, 1:7] = 0
    assert torch.equal(edited, want)
    assert "rows 2–4, columns 1–6" in r.json()["changes"][0]
    bad = client.post("/api/whatif", json={"model": "cnn", "sample": 1, "methods": ["saliency"],
                                           "edit": {"kind": "rect", "top": 9, "left": 0, "bottom": 12, "right": 3}})
    assert bad.status_code == 422 and "outside the 8x8 image" in bad.json()["detail"]
    assert client.get("/api/models/cnn/input", params={"sample": 0}).json() == {
        "kind": "image", "cells": [], "text": None, "height": 8, "width": 8}


def test_session_report_holds_the_sanity_check_and_whole_model_results(client) -> None:
    assert client.post("/api/explain", json={"model": "mlp", "sample": 5, "methods": ["saliency"]}).status_code == 200
    s = client.post("/api/sanity", json={"model": "mlp", "sample": 5, "method": "saliency"}).json()
    assert client.post("/api/distill", json={"model": "lin"}).status_code == 200
    html = client.get("/api/session/report").text
    assert f"Sanity check of Saliency (run in the dashboard): {s['verdict']}" in html
    assert "Surrogate (rules" in html
    terms = client.get("/api/terms").json()
    assert terms["deletion_auc"]["label"] == "deletion AUC"


class WordTokenizer:
    """Whitespace words -> ids (0 pads, 1 unknown), the calls unveil makes of a tokenizer."""

    vocab = ["[PAD]", "[UNK]", "good", "bad", "movie", "a", "very"]

    def __call__(self, texts: list[str], return_tensors: str = "pt", padding: bool = True,
                 truncation: bool = True) -> dict[str, torch.Tensor]:
        ids = [[self.vocab.index(w) if w in self.vocab else 1 for w in t.lower().split()] for t in texts]
        n = max(len(r) for r in ids)
        return {"input_ids": torch.tensor([r + [0] * (n - len(r)) for r in ids])}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.vocab[i] for i in ids]


class BagOfWords(nn.Module):
    """Logit of "positive" = count of "good" minus count of "bad"."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 1)
        with torch.no_grad():
            self.emb.weight.zero_()
            self.emb.weight[2, 0], self.emb.weight[3, 0] = 1.0, -1.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = self.emb(ids).sum(dim=(1, 2))
        return torch.stack([-s, s], dim=1)


def test_a_text_model_with_its_texts_and_a_tokenizer(tmp_path) -> None:
    path = tmp_path / "texts.txt"
    path.write_text("a good movie\n\na bad movie\n")
    app = create_app(models={"bow": ServedModel(BagOfWords().eval(), data=str(path), tokenizer=WordTokenizer(),
                                                class_names="negative,positive")}, zoo=False)
    with TestClient(app) as c:
        m = c.get("/api/models").json()[0]
        assert (m["modality"], m["n_samples"], m["class_names"]) == ("text", 2, ["negative", "positive"])
        assert c.get("/api/models/bow/samples").json()["items"][1]["preview"] == "a bad movie"
        assert c.get("/api/models/bow/input", params={"sample": 1}).json()["text"] == "a bad movie"
        r = c.post("/api/whatif", json={"model": "bow", "sample": 1, "methods": ["saliency"],
                                        "edit": {"kind": "text", "text": "a very good good movie"}})
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["before"]["label"] == "negative"
        assert res["result"]["prediction"]["label"] == "positive"
        assert res["result"]["prediction"]["probability"] == pytest.approx(_softmax_yes(4.0), abs=1e-6)
    with pytest.raises(InputError, match="texts need a tokenizer"):
        create_app(models={"bow": ServedModel(BagOfWords(), data=str(path))}, zoo=False)


def test_an_uploaded_table_is_read_like_the_models_data(client, table) -> None:
    X, _ = table
    words = np.where(X[:, 1] == 1, "f", "m")
    lines = ["c,outcome,sex,b,a"] + [f"{X[i, 3]},{i % 2},{words[i]},{X[i, 2]},{X[i, 0]}" for i in range(30)]
    r = client.post("/api/models/lin/uploads", content="\n".join(lines).encode())
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["rows"] == 30 and up["shape"] == [30, 3]  # the model's three inputs
    x = client.app.state.store.uploads[up["id"]].x
    assert torch.allclose(x, torch.tensor(X[:30][:, [0, 2, 3]], dtype=torch.float32))
    cols = client.get("/api/models/lin/columns", params={"upload": up["id"]}).json()
    assert cols[0]["name"] == "sex" and cols[0]["kept_aside"] and cols[0]["values"] == ["f", "m"]
    inp = client.get("/api/models/lin/input", params={"upload": up["id"], "row": 2}).json()
    assert inp["cells"][1]["choices"] == ["f", "m"] and inp["cells"][1]["value"] == (0.0 if words[2] == "f" else 1.0)
    bad = client.post("/api/models/lin/uploads", content=b"a,b\n1,2\n")
    assert bad.status_code == 422 and "lacks the columns sex, c" in bad.json()["detail"]
    other = client.post("/api/models/lin/uploads", content=b"a,sex,b,c\n1,x,2,3\n")
    assert other.status_code == 422 and "column 'sex' holds ['x']" in other.json()["detail"]


def test_a_wider_table_for_a_model_without_data_says_what_to_give(client) -> None:
    lines = ["a,b,c,d,e,f,label"] + ["1,2,3,4,5,6,0"] * 3
    r = client.post("/api/models/plain/uploads", content="\n".join(lines).encode())
    assert r.status_code == 422
    assert "has 7 columns; model 'plain' takes 6" in r.json()["detail"] and "--feature-names" in r.json()["detail"]
    ok = client.post("/api/models/plain/uploads", content="\n".join(lines[:1][0].rsplit(",", 1)[:1] + ["1,2,3,4,5,6"] * 25).encode())
    assert ok.status_code == 201 and ok.json()["shape"] == [25, 6], ok.text


def test_large_data_is_sampled_with_its_labels(monkeypatch) -> None:
    import unveil.serve._state as state

    monkeypatch.setattr(state, "MAX_DATA_ROWS", 50)
    X = np.random.default_rng(0).normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    app = create_app(models={"m": ServedModel(net, data=np.column_stack([X, y]), label_column="3")}, zoo=False)
    e = app.state.store.entries["m"]
    assert e.samples.shape == (50, 3) and "50 rows drawn at random" in e.description
    rows = {tuple(r) for r in X.astype(np.float32).tolist()}
    assert all(tuple(r) in rows for r in e.samples.tolist())
    assert np.array_equal(e.labels, (e.table[:, 0] > 0).astype(np.int64))  # each label stays with its row
    assert np.array_equal(e.table_labels, e.labels)


class _RegionNet(nn.Module):
    """Says "yes" exactly for the regions north and east (one-hot inputs in sorted order:
    east, north, south, west), whatever the income."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        yes = x[:, 0] + x[:, 1]  # east, north
        return torch.stack([1 - yes, yes], dim=1) * 4


def _one_hot_region(rows: np.ndarray) -> np.ndarray:
    codes = rows[:, 1].astype(int)
    return np.concatenate([(codes[:, None] == np.arange(4)).astype(np.float32),
                           rows[:, :1].astype(np.float32)], axis=1)


@pytest.mark.parametrize("kind", ["rules", "tree"])
def test_surrogate_rules_name_the_words_of_text_columns(kind) -> None:
    import pandas as pd

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"income": rng.normal(size=120),
                       "region": rng.choice(["north", "south", "east", "west"], 120)})
    served = ServedModel(_RegionNet().eval(), data=df, preprocess=_one_hot_region, class_names=["no", "yes"])
    with TestClient(create_app(models={"m": served}, zoo=False)) as c:
        r = c.post("/api/distill", json={"model": "m", "kind": kind, "max_depth": 2})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["fidelity"] == 1.0
    texts = [rule["text"] for rule in res["rules"]]
    assert not any("region <=" in t or "region >" in t or "< region" in t for t in texts), texts
    named = [t for t in texts if "region" in t]
    assert named, texts
    for t in named:  # the words let through are the ones the model answers alike
        answer = t.split(" THEN ")[1].split(" ")[0]
        words = set(t.split("region in {")[1].split("}")[0].split(", ")) if "region in {" in t else {
            t.split("region = ")[1].split(" ")[0]}
        assert words <= ({"north", "east"} if answer == "yes" else {"south", "west"}), t
    assert res["text"].splitlines()[1:] == texts


def test_edit_row_takes_words_or_codes_of_text_columns() -> None:
    from unveil.serve._state import ApiError
    from unveil.serve._whatif import edit_row

    row, names, cats = np.array([0.5, 0.0]), ["x", "region"], {"region": ["east", "north"]}
    for v in ("north", 1, 1.0):
        new, changes = edit_row(row, names, cats, {"region": v})
        assert new.tolist() == [0.5, 1.0] and changes == ["region: east → north"]
    for v in ("south", 2, 0.5, True):
        with pytest.raises(ApiError, match="takes one of east, north"):
            edit_row(row, names, cats, {"region": v})
    assert edit_row(row, names, cats, {"x": 2})[1] == ["x: 0.5 → 2"]
