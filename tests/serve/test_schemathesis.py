"""Property-based API tests: Schemathesis generates requests from the published OpenAPI schema
and runs them in-process against the ASGI app (fixed seed, bounded examples), with every check
it has: no server error, every status and body as the schema says, schema-invalid requests
refused, schema-valid ones accepted.

The schema lists the model and method names; hooks supply what a schema cannot know: ids of
real uploads and runs (so that downloads and uploaded tables are reached, not only 404s), file
contents for uploads, and for valid requests the facts that depend on the model (its columns,
its number of classes, which methods it can check, the options a method declares, what-if edits
its input takes, the columns a counterfactual's constraints name, the layers concept maps condition
on). A second app with an image model does the same for the what-if and concept-map routes."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("schemathesis")
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, seed, settings  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from unveil.frontends import LoadedModel  # noqa: E402
from unveil.serve import create_app  # noqa: E402

N_ROWS, N_CLASSES = 24, 3


def _rows(n: int, seed_: int) -> np.ndarray:
    x = np.random.default_rng(seed_).normal(size=(n, 6)).round(3).astype(np.float32)
    x[:, 5] = np.arange(n) % 2  # a two-valued column: the audits' sensitive attribute
    return x


def _csv(x: np.ndarray) -> bytes:
    header = ",".join(f"x{j}" for j in range(x.shape[1]))
    return (header + "\n" + "\n".join(",".join(f"{v:g}" for v in r) for r in x) + "\n").encode()


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _app() -> Any:
    torch.manual_seed(0)
    # a tiny table model with samples and no zoo: generated requests stay cheap
    # a linear model whose answer turns on the first two columns: every class appears in the
    # tables below, so that surrogates of every kind can be fitted
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, N_CLASSES))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0, 0],
                                          [0, 1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]]))
        net[2].weight.copy_(torch.tensor([[3.0, 0, 0, 0.5], [0, 3.0, 0, 0], [0, 0, 3.0, 0]]))
        net[0].bias.zero_()
        net[2].bias.zero_()
    extra = {"mlp": LoadedModel(net.eval(), name="mlp", class_names=["a", "b", "c"])}
    # budgets large enough that no generated request runs out of time on a loaded machine
    return create_app(models=extra, samples={"mlp": torch.from_numpy(_rows(N_ROWS, 0))}, zoo=False,
                      max_upload_bytes=16 * 1024, budget={"n_steps": 4, "n_samples": 8, "seed": 0},
                      time_budget=600)


APP = _app()
UPLOADS = [_csv(_rows(3, 1)), _npy(_rows(2, 2)), _csv(_rows(30, 3)), _csv(_rows(1, 4)).replace(b",", b";")]
STORE = APP.state.store
with TestClient(APP) as _c:
    for _body in UPLOADS:
        assert _c.post("/api/models/mlp/uploads", content=_body).status_code == 201
    assert _c.post("/api/explain", json={"model": "mlp", "sample": 0, "evaluate": False,
                                         "methods": ["saliency", "integrated_gradients"]}).status_code == 200
    assert _c.post("/api/audit", json={"model": "mlp", "sensitive": "x5"}).status_code == 200
    CHECKABLE = [m["name"] for m in _c.get("/api/models/mlp/methods").json() if m["applies"]]


ROWS = _rows(N_ROWS, 0)
LOW, HIGH = ROWS.min(axis=0), ROWS.max(axis=0)  # the range of the model's data, by column


def _uploads(tables: bool = False) -> list[str]:
    """Ids of the uploads the app holds now (older ones expire as requests add new ones)."""
    return [k for k, up in list(STORE.uploads.items()) if not tables or up.x.shape[0] >= 20]


#: The language routes take a causal LM, the Concepts routes an image model with enough samples:
#: the apps below test them.
LANGUAGE_PATHS = r"^/api/(generate|lens|patch|heads|models/\{model\}/language)$"
CONCEPTS_PATHS = r"^/api/(tcav|models/\{model\}/layers)$"
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path_regex=LANGUAGE_PATHS).exclude(
    path_regex=CONCEPTS_PATHS)


def _pick(items: list[Any], key: Any) -> Any:
    """One of ``items``, chosen by the generated value (so the choice is reproducible)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return items[digest[0] % len(items)]


def _real(value: Any, ids: list[str]) -> Any:
    """Most generated ids become real ones; the rest stay random (and must give a 404)."""
    if not isinstance(value, str) or not ids or hashlib.sha256(value.encode()).digest()[0] < 64:
        return value
    return _pick(ids, value)


def _explain(body: dict[str, Any], n_classes: int = N_CLASSES) -> None:
    # which values a method's options take is the method's own check (a 422 naming the option):
    # valid requests here give none, so that no valid request is refused for them
    body["options"] = {}
    target = body.get("target")
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        body["target"] = int(target) % n_classes


def _one_input(params: dict[str, Any]) -> None:
    """Exactly one of sample and upload (a GET's query cannot say so in its schema)."""
    if params.get("sample") is not None and params.get("upload") is not None:
        params.pop(_pick(["sample", "upload"], (params["sample"], params["upload"])))


def _rect(h: int, w: int, edit: dict[str, Any], digest: bytes) -> dict[str, Any]:
    """A rectangle that starts within the h x w image and ends after it starts: a generated one
    moved into the image (an end past the image stays: the route clips it), else a made one."""
    if edit.get("kind") == "rect":
        top, left = min(edit["top"], h - 1), min(edit["left"], w - 1)
        return {**edit, "top": top, "left": left, "bottom": max(top + 1, edit["bottom"]),
                "right": max(left + 1, edit["right"])}
    top, left = digest[0] % h, digest[1] % w
    return {"kind": "rect", "top": top, "left": left, "bottom": top + 1 + digest[2] % (h - top),
            "right": left + 1 + digest[3] % (w - left), "fill": _pick(["mean", "zero", "blur"], digest)}


def _edit(store: Any, model: str, edit: Any, key: Any) -> dict[str, Any]:
    """An edit the model's input takes, made from the generated one: values of the model's real
    columns within the range of its data, a rectangle within its image, a text for text models
    (``key``, the generated body, chooses what the generated edit does not give)."""
    e = store.entries[model]
    digest = hashlib.sha256(repr(key).encode()).digest()
    edit = edit if isinstance(edit, dict) else {}
    if e.modality == "image" and e.sample_shape is not None:
        return _rect(e.sample_shape[-2], e.sample_shape[-1], edit, digest)
    if e.modality == "text":
        return {"kind": "text", "text": edit.get("text") or "a short text"}
    names = e.columns(len(LOW))
    given = [v for v in (edit.get("values") or {}).values()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    cols = sorted({digest[1 + i] % len(names) for i in range(1 + digest[0] % 3)})
    values = {}
    for i, j in enumerate(cols):
        v = given[i] if i < len(given) else LOW[j] + (HIGH[j] - LOW[j]) * digest[5 + i] / 255
        values[names[j]] = round(float(np.clip(v, LOW[j], HIGH[j])), 4)
    return {"kind": "values", "values": values}


def _concepts(store: Any, body: dict[str, Any], n_classes: int) -> None:
    """A layer of the model (a convolution or dense layer) and a target in its range."""
    from unveil.serve._concept_maps import concept_layers

    e = store.entries.get(body.get("model"))
    if e is not None:
        names = [lay.name for lay in concept_layers(store.model(e)).layers]
        body["layer"] = _pick(names, body.get("layer"))
    target = body.get("target")
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        body["target"] = int(target) % n_classes


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    """Real ids, files and model facts for schema-valid requests (negative ones stay as made)."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return case
    path, method = case.operation.path, case.operation.method.upper()
    params = case.path_parameters or {}
    if "run" in params:
        params["run"] = _real(params["run"], list(STORE.runs))
        run = STORE.runs.get(params["run"])
        if "method" in params and run is not None and run.explanations:  # one the run holds
            params["method"] = _real(params["method"], sorted(run.explanations))
    if "page" in params:
        params["page"] = _real(params["page"], list(STORE.pages))
    if isinstance(case.query, dict) and "upload" in case.query:
        case.query["upload"] = _real(case.query["upload"], _uploads(tables=True))
    if isinstance(case.query, dict) and path.endswith("/input"):
        _one_input(case.query)
    if path.endswith("/uploads"):
        case.body = _pick(UPLOADS, case.body)
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and method == "POST":
        if "upload" in body:
            body["upload"] = _real(body["upload"], _uploads(tables=path in ("/api/distill", "/api/audit")))
        if path == "/api/explain":
            _explain(body)
        elif path == "/api/whatif":
            _explain(body)
            if body.get("model") in STORE.entries:
                body["edit"] = _edit(STORE, body["model"], body.get("edit"), dict(body))
        elif path == "/api/sanity":
            body["method"] = _pick(CHECKABLE, body.get("method"))
        elif path == "/api/concepts":
            _concepts(STORE, body, N_CLASSES)
        elif path == "/api/audit":
            body["sensitive"] = "x5"
            body["positive"] = body.get("positive", 1) % N_CLASSES
        elif path in ("/api/counterfactual", "/api/anchor") and body.get("model") in STORE.entries:
            _recourse(body, counterfactual=path == "/api/counterfactual")
    return case


def _recourse(body: dict[str, Any], *, counterfactual: bool) -> None:
    """A counterfactual or anchor request the model's row takes: edits of its real columns
    within its data's range, constraints naming real columns (no column both only-up and
    only-down, ranges low <= high) and a class of the model to reach."""
    key = dict(body)
    body["values"] = _edit(STORE, body["model"], {"kind": "values", "values": body.get("values")}, key)["values"]
    if body["model"] != "mlp" or not counterfactual:
        return
    names = STORE.entries["mlp"].columns(len(LOW))
    digest = hashlib.sha256(repr(key).encode()).digest()
    for i, kind in enumerate(("immutable", "increasing", "decreasing")):
        if kind in body:
            body[kind] = [names[(digest[i] + k) % len(names)] for k in range(min(len(body[kind]), 2))]
    if "decreasing" in body:
        body["decreasing"] = [c for c in body["decreasing"] if c not in body.get("increasing", [])]
    if "ranges" in body:
        out = {}
        for k, rg in enumerate(list(body["ranges"].values())[:2]):
            lo, hi = rg.get("low"), rg.get("high")
            if lo is not None and hi is not None and lo > hi:
                lo, hi = hi, lo
            out[names[(digest[3] + k) % len(names)]] = {"low": lo, "high": hi}
        body["ranges"] = out
    body["desired"] = int(body.get("desired") or digest[4]) % N_CLASSES  # three classes: say which


@schema.parametrize()
@seed(20240601)
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_never_errors(case) -> None:
    case.call_and_validate()



# -- what-if on an image model ----------------------------------------------------------------
# The edits of an image are rectangles, whose end must come after their start and which must
# meet the image: facts of the image the schema cannot state, supplied by the hook.

def _image_app() -> Any:
    from _util import TinyCNN

    torch.manual_seed(0)
    net = LoadedModel(TinyCNN().eval(), name="cnn", class_names=["a", "b", "c", "d"])
    return create_app(models={"cnn": net}, samples={"cnn": torch.rand(4, 1, 16, 16)}, zoo=False,
                      budget={"n_steps": 4, "n_samples": 8, "seed": 0}, time_budget=600)


IMAGE_APP = _image_app()
IMAGE_STORE = IMAGE_APP.state.store
CHEAP = ["saliency", "integrated_gradients", "grad_cam", "occlusion"]  # what the edit is explained by
image_schema = schemathesis.openapi.from_asgi("/openapi.json", IMAGE_APP).include(
    path_regex=r"^/api/(whatif|concepts|models/\{model\}/(input|concept-layers))$")


@image_schema.hook("map_case")
def map_image_case(context: Any, case: Any) -> Any:
    """A rectangle within the 16x16 image and cheap methods, for schema-valid requests."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return case
    if isinstance(case.query, dict):
        _one_input(case.query)
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and case.operation.path == "/api/whatif":
        key = dict(body)
        _explain(body, n_classes=4)
        body["methods"] = sorted({_pick(CHEAP, m) for m in body.get("methods", [])}) or ["saliency"]
        body["edit"] = _edit(IMAGE_STORE, "cnn", body.get("edit"), key)
    if body is not None and case.operation.path == "/api/concepts":
        _concepts(IMAGE_STORE, body, 4)
    return case


@image_schema.parametrize()
@seed(20240601)
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_image_whatif_never_errors(case) -> None:
    case.call_and_validate()


# -- the language routes on the induction transformer ------------------------------------------
# Prompts are token ids (the model has no tokenizer), prompt and new tokens must fit its 64
# positions, and patching needs a clean and a corrupted prompt of one length that the model tells
# apart: facts the hook supplies for schema-valid requests.

def _language_app() -> Any:
    from unveil.frontends import load_model

    return create_app(models={"ind": load_model("zoo:induction_transformer")}, zoo=False,
                      budget={"n_steps": 4, "n_samples": 8, "seed": 0}, time_budget=600)


LANGUAGE_APP = _language_app()
with TestClient(LANGUAGE_APP) as _c:
    LM_INFO = _c.get("/api/models/ind/language").json()
#: Methods that apply to the induction transformer (its attention is not a Hugging Face module,
#: so the attention-rollout methods do not), cheap ones.
LM_METHODS = ["input_x_gradient", "saliency", "integrated_gradients", "occlusion", "feature_ablation",
              "kernel_shap"]
language_schema = schemathesis.openapi.from_asgi("/openapi.json", LANGUAGE_APP).include(path_regex=LANGUAGE_PATHS)


def _ids_text(key: Any, most: int) -> str:
    """1 to ``most`` token ids of the 64-token vocabulary, chosen by the generated value."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    n = 1 + digest[0] % most
    return " ".join(str(b % 64) for b in digest[1:1 + n])


@language_schema.hook("map_case")
def map_language_case(context: Any, case: Any) -> Any:
    """Prompts of token ids that fit the model, methods that apply to it, a known patching pair."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body if isinstance(case.body, dict) else None
    path = case.operation.path
    if body is None:
        return case
    key = dict(body)
    if path == "/api/generate":
        body["prompt"] = _ids_text(key, 12)
        body["max_new_tokens"] = 1 + int(body.get("max_new_tokens", 1)) % 3
        body["method"] = _pick(LM_METHODS, body.get("method"))
        body["chat"] = False if body.get("chat") is not None else None
        if body["method"] not in ("integrated_gradients",):
            body.pop("n_steps", None)
        elif body.get("n_steps") is not None:
            body["n_steps"] = 1 + int(body["n_steps"]) % 8
        if body.get("contrast") is not None:
            body["contrast"] = str(hashlib.sha256(repr(key).encode()).digest()[3] % 64)
        if body["method"] == "occlusion":
            body["units"] = "tokens"
    elif path == "/api/lens":
        body["prompt"] = _ids_text(key, 20)
        if body.get("target") is not None:
            body["target"] = str(hashlib.sha256(repr(key).encode()).digest()[3] % 64)
    elif path == "/api/patch":
        body.update({k: LM_INFO["patch_example"][k] for k in ("clean", "corrupted", "target", "foil")})
        body["sites"] = [x for x in body.get("sites", ["resid"]) if x in LM_INFO["sites"]] or ["resid"]
    elif path == "/api/heads":
        body["half"] = 2 + int(body.get("half", 2)) % 10
        body["n_sequences"] = 1 + int(body.get("n_sequences", 1)) % 4
    return case


@language_schema.parametrize()
@seed(20240601)
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_language_routes_never_error(case) -> None:
    case.call_and_validate()


# -- which training rows drove a decision ------------------------------------------------------
# The route needs labelled training rows: a second app whose table model knows its rows' labels
# (as ``unveil serve --data ... --label-column ...`` gives it). Generated requests name its
# samples and real uploads; methods and k come from the schema.

TD_APP = _app()
TD_STORE = TD_APP.state.store
TD_STORE.entries["mlp"].table_labels = (ROWS[:, 0] > 0).astype(np.int64) + (ROWS[:, 1] > 1).astype(np.int64)
with TestClient(TD_APP) as _c:
    assert _c.post("/api/models/mlp/uploads", content=UPLOADS[0]).status_code == 201
    _r = _c.post("/api/training-data", json={"model": "mlp", "sample": 0, "method": "trak"})
    assert _r.status_code == 200 and _r.json()["proponents"], _r.text  # the route's real path is reached
td_schema = schemathesis.openapi.from_asgi("/openapi.json", TD_APP).include(path_regex=r"^/api/training-data$")


@td_schema.hook("map_case")
def map_training_data_case(context: Any, case: Any) -> Any:
    """Exactly one input (a sample in range, or a real upload's first row) for valid requests."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body if isinstance(case.body, dict) else None
    if body is not None:
        if body.get("upload") is not None or body.get("sample") is None:
            body.pop("sample", None)
            body["upload"] = _real(body.get("upload") or "0" * 16, list(TD_STORE.uploads))
            body["row"] = 0
        else:
            body["sample"] = body["sample"] % N_ROWS
    return case


@td_schema.parametrize()
@seed(20240601)
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_training_data_never_errors(case) -> None:
    case.call_and_validate()


# -- concepts (TCAV) on an image model -------------------------------------------------------------
# A valid TCAV request names a layer of the model, a class with samples, and concepts of at least
# 10 examples with distinct names: facts of the model the schema cannot state, supplied here.

def _concepts_app() -> Any:
    from _util import TinyCNN

    torch.manual_seed(0)
    net = LoadedModel(TinyCNN().eval(), name="cnn", class_names=["a", "b", "c", "d"])
    return create_app(models={"cnn": net}, samples={"cnn": torch.rand(60, 1, 16, 16)}, zoo=False,
                      time_budget=600)


CONCEPTS_APP = _concepts_app()
with TestClient(CONCEPTS_APP) as _c:
    CNN_LAYERS = _c.get("/api/models/cnn/layers").json()["layers"]
with torch.no_grad():
    _e = CONCEPTS_APP.state.store.entries["cnn"]
    TOP_CLASS = int(torch.bincount(CONCEPTS_APP.state.store.model(_e)(_e.samples).argmax(1)).argmax())
concepts_schema = schemathesis.openapi.from_asgi("/openapi.json", CONCEPTS_APP).include(path_regex=CONCEPTS_PATHS)


@concepts_schema.hook("map_case")
def map_concepts_case(context: Any, case: Any) -> Any:
    """A real layer, a class with samples, concepts of 10+ sample indices with distinct names and
    few random runs, for schema-valid requests."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and case.operation.path == "/api/tcav":
        key = repr(body)
        body["model"] = "cnn"
        body["layer"] = _pick(CNN_LAYERS, key)
        body["target"] = TOP_CLASS
        concepts = body.get("concepts") or [{}]
        body["concepts"] = [{"name": f"c{i}", "samples": [(i * 7 + j) % 60 for j in range(10 + i)]}
                            for i in range(len(concepts))]
        body["n_random"] = 2 + hashlib.sha256(key.encode()).digest()[0] % 4
    return case


@concepts_schema.parametrize()
@seed(20240601)
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_concepts_never_errors(case) -> None:
    case.call_and_validate()
