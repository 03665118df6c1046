"""The dashboard's language routes through Starlette's TestClient: on the induction transformer
(a model whose mechanism is known: it copies the token that followed the earlier occurrence; its
induction heads sit in layer 2 and previous-token heads in layer 1), on a user's Hugging Face
model saved to a folder with its tokenizer, on SmolLM2 when installed, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from unveil.frontends import LoadedModel, load_model  # noqa: E402
from unveil.serve import create_app  # noqa: E402

IND = "zoo:induction_transformer"


@pytest.fixture(scope="module")
def client():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    models = {IND: load_model(IND), "mlp": LoadedModel(mlp, name="mlp", class_names=["a", "b"])}
    app = create_app(models=models, samples={"mlp": torch.randn(3, 4)}, zoo=False,
                     budget={"n_steps": 8, "n_samples": 16, "seed": 0})
    with TestClient(app) as c:
        yield c


def _repeat(seed: int = 0, half: int = 7) -> tuple[list[int], int]:
    """``[BOS] r r[:3]``: the token that followed ``r[2]`` the first time is ``r[3]``."""
    run = np.random.default_rng(seed).choice(np.arange(1, 64), size=half, replace=False).tolist()
    return [0, *run, *run[:3]], int(run[3])


def _text(ids: list[int]) -> str:
    return " ".join(map(str, ids))


def test_a_causal_lm_is_its_own_kind_and_classifiers_keep_theirs(client):
    kinds = {m["name"]: m["modality"] for m in client.get("/api/models").json()}
    assert kinds == {IND: "causal_lm", "mlp": "tabular"}
    info = client.get(f"/api/models/{IND}/language").json()
    assert info["ids_only"] and not info["chat"]
    assert (info["n_layers"], info["n_heads"], info["vocab_size"], info["context"]) == (2, 4, 64, 64)
    assert info["max_new_tokens"] == 63
    # its attention is its own module, whose weights the rollout methods cannot read
    assert "attention_rollout" not in info["methods"] and "integrated_gradients" in info["methods"]
    r = client.get("/api/models/mlp/language")
    assert r.status_code == 422 and "not a causal language model" in r.json()["detail"]
    # the classifier's views still answer as before
    r = client.post("/api/explain", json={"model": "mlp", "sample": 0, "methods": ["saliency"], "evaluate": False})
    assert r.status_code == 200 and r.json()["maps"][0]["status"] == "ok"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generation_copies_the_induction_continuation(client, seed):
    ids, nxt = _repeat(seed)
    r = client.post("/api/generate", json={"model": IND, "prompt": _text(ids), "max_new_tokens": 3,
                                           "method": "integrated_gradients", "n_steps": 16})
    assert r.status_code == 200, r.text
    body = r.json()
    res = body["result"]
    assert res["ids"][len(ids)] == nxt  # the induction mechanism: copy what came after last time
    assert res["ids"][: len(ids)] == ids
    assert res["n_prompt"] == len(ids) and len(res["tokens"]) == len(ids) + 3
    values = res["values"]
    assert len(values) == 3 and all(len(row) == len(res["units"]) for row in values)
    # a generated token is attributed to everything before it, never to itself or later tokens
    for g, row in enumerate(values):
        seen = [v is not None for v in row]
        assert seen == [u < len(ids) + g for u in range(len(row))]
    probs = res["scores"]["prob"]
    assert probs[0] > 0.5 and all(0 <= p <= 1 for p in probs)
    assert all(h >= 0 for h in res["scores"]["entropy"])
    # completeness of integrated gradients: the values sum to f(x) - f(baseline) up to the gap
    for g in range(3):
        total = sum(v for v in values[g] if v is not None)
        assert total == pytest.approx(res["outputs"][g] - res["baseline_outputs"][g] + res["delta"][g], abs=1e-4)
    assert body["summary"][0].startswith("The model wrote")
    page = client.get(f"/api/language/pages/{body['page']}")
    assert page.status_code == 200 and "Where each generated token came from" in page.text
    assert "attachment" in page.headers["content-disposition"]


def test_contrast_explains_the_margin_over_a_foil(client):
    ids, nxt = _repeat(3)
    foil = next(i for i in range(1, 64) if i not in ids)
    r = client.post("/api/generate", json={"model": IND, "prompt": _text(ids), "max_new_tokens": 1,
                                           "method": "feature_ablation", "contrast": str(foil)})
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["objective"] == "log_prob_diff" and res["foils"] == [f" {foil}"]
    s = res["scores"]
    assert s["prob_diff"][0] == pytest.approx(s["prob"][0] - s["foil_prob"][0])
    # the objective is log p(token) - log p(foil) of the full prompt
    assert res["outputs"][0] == pytest.approx(np.log(s["prob"][0]) - np.log(s["foil_prob"][0]), rel=1e-3)


def test_lens_last_row_is_the_models_prediction(client):
    ids, nxt = _repeat(4)
    r = client.post("/api/lens", json={"model": IND, "prompt": _text(ids), "top_k": 2})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["rows"] == ["embed", "0", "1"]
    assert len(res["tokens"]) == len(ids)
    # the lens after the last layer is the model's output: its top token is the model's
    # prediction (the tracked target, by default) at every position
    assert [t[0] for t in res["top_tokens"][-1]] == res["target_tokens"]
    assert res["top_tokens"][-1][-1][0] == f" {nxt}"
    assert all(len(cell) == 2 for row in res["top_tokens"] for cell in row)
    tracked = client.post("/api/lens", json={"model": IND, "prompt": _text(ids), "target": str(nxt)}).json()
    assert set(tracked["target_ids"]) == {nxt}


def test_patching_the_last_layer_restores_exactly_the_last_position(client):
    ids, nxt = _repeat(5)
    other = next(i for i in range(1, 64) if i not in ids)
    corrupted = list(ids)
    corrupted[4] = other  # the token the second run should copy, replaced
    r = client.post("/api/patch", json={"model": IND, "clean": _text(ids), "corrupted": _text(corrupted),
                                        "target": str(nxt), "foil": str(other), "sites": ["resid", "heads"]})
    assert r.status_code == 200, r.text
    res = r.json()
    resid = np.array(res["resid"], dtype=float)
    assert resid.shape == (2, len(ids))
    # patching the whole residual stream after the last layer at the metric's position restores
    # the clean logits (share 1), and at any other position changes nothing (share 0)
    assert resid[-1, -1] == pytest.approx(1.0, abs=1e-6)
    assert np.abs(resid[-1, :-1]).max() < 1e-6
    # before layer 2 reads it, the changed position carries the difference
    assert int(np.argmax(resid[0])) == 4
    heads = np.array(res["heads"], dtype=float)
    assert heads.shape == (2, 4)
    assert res["tokens"][4] != res["corrupted_tokens"][4]
    attr = client.post("/api/patch", json={"model": IND, "clean": _text(ids), "corrupted": _text(corrupted),
                                           "target": str(nxt), "foil": str(other), "attribution": True}).json()
    assert attr["kind"] == "attribution" and attr["checked"]
    assert attr["faithfulness"] is None or -1 <= attr["faithfulness"] <= 1


def test_head_scores_single_out_the_known_heads(client):
    r = client.post("/api/heads", json={"model": IND, "half": 10, "n_sequences": 4})
    assert r.status_code == 200, r.text
    res = r.json()
    prev, ind = np.array(res["previous_token"]), np.array(res["induction"])
    assert prev.shape == ind.shape == (2, 4)
    assert np.unravel_index(prev.argmax(), prev.shape)[0] == 0  # previous-token heads: layer 1
    assert np.unravel_index(ind.argmax(), ind.shape)[0] == 1  # induction heads: layer 2


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/api/generate", {"prompt": "   "}, 422, "the prompt is empty"),
    ("/api/generate", {"prompt": ""}, 422, "at least 1 character"),
    ("/api/generate", {"prompt": "hello there"}, 422, "type token ids"),
    ("/api/generate", {"prompt": "0 1 2", "max_new_tokens": 63}, 422, "at most 61 new tokens"),
    ("/api/generate", {"prompt": "0 1 2", "max_new_tokens": 65}, 422, "less than or equal to 64"),
    ("/api/generate", {"prompt": "0 1 2", "chat": True}, 422, "no chat template"),
    ("/api/generate", {"prompt": "0 1 2", "contrast": "x"}, 422, "contrast is a token id"),
    ("/api/generate", {"prompt": "0 1 2", "method": "saliency", "n_steps": 4}, 422, "takes no n_steps"),
    ("/api/generate", {"prompt": "0 1 2", "method": "grad_cam"}, 422, "method"),
    ("/api/generate", {"prompt": "0 1 2", "temperature": 1.0}, 422, "Extra inputs"),
    ("/api/generate", {"prompt": " ".join(["1"] * 70)}, 422, "the model takes at most 64"),
    ("/api/lens", {"prompt": " ".join(["1"] * 49)}, 422, "at most 48"),
    ("/api/lens", {"prompt": "0 1 2", "target": "1 2"}, 422, "one token id"),
    ("/api/patch", {"clean": "0 1 2", "corrupted": "0 1", "target": "1", "foil": "2"}, 422, "reword"),
    ("/api/patch", {"clean": "0 1 2", "corrupted": "0 1 3", "target": "1", "foil": "1"}, 422, "the same"),
    ("/api/patch", {"clean": "0 1 2", "corrupted": "0 1 3", "target": "1", "foil": "2", "sites": ["x"]}, 422, "sites"),
    ("/api/heads", {"half": 40}, 422, "less than or equal to 32"),
])
def test_bad_requests_get_one_clear_line(client, path, body, status, words):
    r = client.post(path, json={"model": IND, **body})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_other_models_and_unknown_names_are_refused(client):
    r = client.post("/api/generate", json={"model": "mlp", "prompt": "hi"})
    assert r.status_code == 422 and "not a causal language model" in r.json()["detail"]
    r = client.post("/api/lens", json={"model": "nope", "prompt": "hi"})
    assert r.status_code == 404
    assert client.get("/api/language/pages/0123456789abcdef").status_code == 404


# -- a user's own Hugging Face model, saved with its tokenizer ---------------------------------
def test_a_users_hugging_face_model_finds_its_tokenizer(tmp_path: Path):
    pytest.importorskip("transformers")
    from tests.language._lm_models import tiny_llama, tiny_tokenizer
    from transformers import AutoModelForCausalLM

    tiny_llama().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    app = create_app(models={"mine": model}, zoo=False)  # no tokenizer given: found beside the weights
    with TestClient(app) as c:
        assert c.get("/api/models").json()[0]["modality"] == "causal_lm"
        info = c.get("/api/models/mine/language").json()
        assert not info["ids_only"] and info["chat"] and "beside" in info["tokenizer"]
        r = c.post("/api/generate", json={"model": "mine", "prompt": "The capital of France is",
                                          "max_new_tokens": 2, "units": "words"})
        assert r.status_code == 200, r.text
        res = r.json()
        assert r.json()["chat"] is True and "template" in res["result"]["kinds"]
        user = [t for t, k in zip(res["result"]["unit_texts"], [res["result"]["kinds"][u[0]] for u in res["result"]["units"]])
                if k == "prompt"]
        assert user == ["The", " capital", " of", " France", " is"]
        r = c.post("/api/generate", json={"model": "mine", "prompt": "Mary and John", "max_new_tokens": 1,
                                          "chat": False, "contrast": "John Smith"})
        assert r.status_code == 422 and "not one" in r.json()["detail"]
        assert c.post("/api/lens", json={"model": "mine", "prompt": "The capital"}).status_code == 200
        assert c.post("/api/heads", json={"model": "mine", "half": 4}).status_code == 200


def test_a_model_without_a_head_is_not_a_language_model():
    pytest.importorskip("transformers")
    from tests.language._lm_models import tiny_llama

    from unveil.frontends.lm import is_causal_lm

    assert is_causal_lm(tiny_llama())
    assert not is_causal_lm(tiny_llama(head=False))
    assert not is_causal_lm(torch.nn.Linear(3, 2))


# -- SmolLM2 --------------------------------------------------------------------------------
def test_smollm2_answers_and_explains():
    from tests.language._lm_models import smollm2_or_skip

    model, tok = smollm2_or_skip()
    app = create_app(models={"smol": LoadedModel(model, name="smol", tokenizer=tok)}, zoo=False)
    with TestClient(app) as c:
        info = c.get("/api/models/smol/language").json()
        assert info["chat"] and info["n_layers"] == 30 and info["n_heads"] == 9
        assert "attention_rollout" in info["methods"]
        r = c.post("/api/generate", json={"model": "smol", "prompt": "The capital of France is",
                                          "max_new_tokens": 2, "chat": False})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["tokens"][-2] == " Paris"
        r = c.post("/api/generate", json={"model": "smol", "prompt": "When Mary and John went to the store, "
                                          "John gave a drink to", "max_new_tokens": 1, "chat": False,
                                          "contrast": " John", "units": "words"})
        assert r.status_code == 200, r.text
        res = r.json()["result"]
        assert res["tokens"][-1] == " Mary" and res["scores"]["prob_diff"][0] > 0


def test_a_language_models_texts_are_its_example_prompts():
    pytest.importorskip("transformers")
    from tests.language._lm_models import tiny_llama, tiny_tokenizer

    from unveil.serve import ServedModel

    texts = ["A small model reads a short text", "The capital of Italy is"]
    served = ServedModel(tiny_llama(), data=texts, tokenizer=tiny_tokenizer())
    with TestClient(create_app(models={"tiny": served}, zoo=False)) as c:
        assert c.get("/api/models").json()[0]["modality"] == "causal_lm"
        info = c.get("/api/models/tiny/language").json()
        assert info["examples"][:2] == texts
        assert info["tokenizer"] == "given" and info["chat"]
        # the chat template's tokens count against the context: 64 positions in all
        tok = tiny_tokenizer()
        text = tok.apply_chat_template([{"role": "user", "content": texts[0]}], tokenize=False,
                                       add_generation_prompt=True)
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        r = c.post("/api/generate", json={"model": "tiny", "prompt": texts[0], "max_new_tokens": 64 - n + 1})
        assert r.status_code == 422 and "with the chat template" in r.json()["detail"]
        r = c.post("/api/generate", json={"model": "tiny", "prompt": texts[0], "max_new_tokens": 64 - n,
                                          "method": "saliency"})
        assert r.status_code == 200, r.text


def test_a_tokenizer_that_does_not_fit_the_model_is_one_clear_error():
    pytest.importorskip("transformers")
    from tests.language._lm_models import tiny_llama, tiny_tokenizer

    app = create_app(models={"mixed": LoadedModel(tiny_llama(vocab=50), name="mixed", tokenizer=tiny_tokenizer())},
                     zoo=False)
    with TestClient(app) as c:
        r = c.get("/api/models/mixed/language")
        assert r.status_code == 422 and "do not belong together" in r.json()["detail"]
        r = c.post("/api/generate", json={"model": "mixed", "prompt": "The capital"})
        assert r.status_code == 422 and "do not belong together" in r.json()["detail"]


def test_a_factory_may_return_the_model_with_its_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("transformers")
    (tmp_path / "pairlm.py").write_text(
        "from tests.language._lm_models import tiny_llama, tiny_tokenizer\n\n"
        "def factory():\n    return tiny_llama(), tiny_tokenizer()\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # the repository: tests.language
    lm = load_model("pairlm:factory")
    assert lm.tokenizer is not None and isinstance(lm.model, torch.nn.Module)
    with TestClient(create_app(models={lm.name: lm}, zoo=False)) as c:
        info = c.get(f"/api/models/{lm.name}/language").json()
        assert info["tokenizer"] == "given" and not info["ids_only"]
