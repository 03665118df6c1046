"""Faults the dashboard's server once had, each with the request that showed it: 500s on
non-finite JSON numbers and on hostile or odd uploads, misread tables, uploads parsed on the
event loop, one heavy request holding every other, loose request types, cross-site uploads,
the test client's host accepted outside tests, bad model names, and a busy port."""

from __future__ import annotations

import io
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from _util import TinyCNN, mlp
from unveil.errors import InputError
from unveil.frontends import LoadedModel

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from unveil.serve import create_app  # noqa: E402

WAIT = 60  # seconds a test waits for an event before failing (never reached when all is well)


def _table(n: int = 30) -> torch.Tensor:
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
    x[:, 5] = (torch.arange(n) % 2).float()  # a two-valued column for audits
    return x


def _app(**kw: Any) -> Any:
    models = {"mlp": LoadedModel(mlp(n_in=6, n_out=3).eval(), name="mlp", class_names=["a", "b", "c"]),
              "cnn": LoadedModel(TinyCNN().eval(), name="cnn")}
    samples = {"mlp": _table(), "cnn": torch.rand(3, 1, 16, 16)}
    return create_app(models=models, samples=samples, zoo=False, max_rows=40,
                      budget={"n_steps": 4, "n_samples": 8, "seed": 0}, **kw)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(_app()) as c:
        yield c


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (1-bit grey) with a short, valid body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + _chunk(b"IEND", b""))


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 14 + 40) + info + b"\0" * 64


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 16


def _upload(client: TestClient, model: str, body: bytes, **kw: Any) -> Any:
    return client.post(f"/api/models/{model}/uploads", content=body, **kw)


# -- non-finite numbers in JSON ------------------------------------------------------------

@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309"])
@pytest.mark.parametrize("path,body", [
    ("/api/explain", '{"model": "mlp", "sample": %s, "methods": ["saliency"]}'),
    ("/api/explain", '{"model": "mlp", "sample": 0, "methods": ["integrated_gradients"], '
                     '"options": {"integrated_gradients": {"n_steps": %s}}}'),
    ("/api/explain", '{"model": "mlp", "sample": 0, "methods": ["saliency"], "target": %s}'),
    ("/api/sanity", '{"model": "mlp", "sample": 0, "method": "saliency", "row": %s}'),
    ("/api/distill", '{"model": "mlp", "max_depth": %s}'),
    ("/api/audit", '{"model": "mlp", "sensitive": "x5", "positive": %s}'),
    ("/api/audit", '{"model": "mlp", "sensitive": "x5", "extra": [%s]}'),
    ("/api/whatif", '{"model": "mlp", "sample": 0, "methods": ["saliency"], '
                    '"edit": {"kind": "values", "values": {"x0": %s}}}'),
    ("/api/whatif", '{"model": "cnn", "sample": 0, "methods": ["saliency"], '
                    '"edit": {"kind": "rect", "top": 0, "left": 0, "bottom": %s, "right": 4}}'),
])
def test_non_finite_json_numbers_are_a_422_with_a_message(client, path, body, number) -> None:
    r = client.post(path, content=(body % number).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith("invalid request: ")


def test_a_nan_option_value_is_named_as_not_accepted(client) -> None:
    body = ('{"model": "mlp", "sample": 0, "methods": ["integrated_gradients"], '
            '"options": {"integrated_gradients": {"n_steps": NaN}}}')
    r = client.post("/api/explain", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN, Infinity" in r.json()["detail"]


def test_malformed_json_says_where(client) -> None:
    r = client.post("/api/explain", content=b'{"model": ', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "not valid JSON (Expecting value at character 10)" in r.json()["detail"]


# -- what-if edits ---------------------------------------------------------------------------

@pytest.mark.parametrize("edit,fragment", [
    ({"kind": "rect", "top": 0, "left": 0, "bottom": 10**9, "right": 4}, "edit.rect.bottom"),
    ({"kind": "rect", "top": -2, "left": 0, "bottom": 4, "right": 4}, "edit.rect.top"),
    ({"kind": "rect", "top": 0, "left": -1, "bottom": 4, "right": 4}, "edit.rect.left"),
    ({"kind": "rect", "top": True, "left": 0, "bottom": 4, "right": 4}, "edit.rect.top"),
    ({"kind": "rect", "top": 20, "left": 0, "bottom": 30, "right": 4}, "outside the 16x16 image"),
    ({"kind": "rect", "top": 5, "left": 0, "bottom": 5, "right": 4}, "is empty"),
    ({"kind": "values", "values": {"x0": 1.0}}, "takes image inputs"),
    ({"kind": "text", "text": "a cat"}, "takes image inputs"),
])
def test_bad_image_edits_are_a_422_with_a_message(client, edit, fragment) -> None:
    r = client.post("/api/whatif", json={"model": "cnn", "sample": 0, "methods": ["saliency"],
                                         "evaluate": False, "edit": edit})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_a_rectangle_running_past_the_image_is_clipped_to_it(client) -> None:
    r = client.post("/api/whatif", json={"model": "cnn", "sample": 0, "methods": ["saliency"],
                                         "evaluate": False, "edit": {"kind": "rect", "top": 8, "left": 8,
                                                                     "bottom": 10_000, "right": 10_000}})
    assert r.status_code == 200, r.text
    assert r.json()["changes"] == ["rows 8–15, columns 8–15 painted with the image's mean colour"]


@pytest.mark.parametrize("edit,fragment", [
    ({"kind": "values", "values": {"x9": 1.0}}, "no column named 'x9'"),
    ({"kind": "values", "values": {"x0": "high"}}, "column 'x0' takes a number"),
    ({"kind": "values", "values": {"x0": True}}, "edit.values.values.x0"),
    ({"kind": "values", "values": {}}, "edit.values.values"),
    ({"kind": "rect", "top": 0, "left": 0, "bottom": 2, "right": 2}, "takes tabular inputs"),
    ({"kind": "text", "text": "a row"}, "takes tabular inputs"),
])
def test_bad_table_edits_are_a_422_with_a_message(client, edit, fragment) -> None:
    r = client.post("/api/whatif", json={"model": "mlp", "sample": 0, "methods": ["saliency"],
                                         "evaluate": False, "edit": edit})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_a_whatif_on_inputs_that_are_not_tables_images_or_texts_is_a_422() -> None:
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(24, 2)).eval()
    app = create_app(models={"seq": net}, samples={"seq": torch.rand(3, 2, 10)}, zoo=False)
    with TestClient(app) as c:
        assert c.get("/api/models/seq/input").json()["kind"] == "other"
        for edit in ({"kind": "values", "values": {"x0": 1.0}}, {"kind": "text", "text": "a"},
                     {"kind": "rect", "top": 0, "left": 0, "bottom": 1, "right": 1}):
            r = c.post("/api/whatif", json={"model": "seq", "sample": 0, "methods": ["saliency"],
                                            "edit": edit})
            assert r.status_code == 422, r.text
            assert "takes sequence inputs" in r.json()["detail"]
            assert "what-if edits work on table rows" in r.json()["detail"]


def test_the_editable_input_is_sample_0_unless_one_is_named(client) -> None:
    first = client.get("/api/models/mlp/input").json()
    assert first == client.get("/api/models/mlp/input", params={"sample": 0}).json()
    assert first != client.get("/api/models/mlp/input", params={"sample": 1}).json()
    r = client.get("/api/models/mlp/input", params={"sample": 0, "upload": "0123456789abcdef"})
    assert r.status_code == 422 and "exactly one of" in r.json()["detail"]


# -- uploads that broke the server -----------------------------------------------------------

@pytest.mark.parametrize("body,status,fragment", [
    (_png_header(20_000, 20_000), 413, "at most 16777216 pixels"),
    (_bmp_header(60_000, 60_000), 413, "at most 16777216 pixels"),
    (_png_header(5000, 4000), 413, "5000 x 4000 pixels"),
], ids=["png-20000", "bmp-60000", "png-5000x4000"])
def test_images_declaring_too_many_pixels_are_refused_from_their_header(client, body, status, fragment) -> None:
    assert len(body) < 4096  # a few bytes claim gigabytes once decoded
    r = _upload(client, "cnn", body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"] and "shrink it" in r.json()["detail"]


def test_the_pixel_cap_is_a_setting() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(buf, format="PNG")
    with TestClient(_app(max_pixels=100)) as c:
        r = _upload(c, "cnn", buf.getvalue())
        assert r.status_code == 413 and "20 x 20 pixels; at most 100 pixels" in r.json()["detail"]
    with TestClient(_app(max_pixels=400)) as c:
        r = _upload(c, "cnn", buf.getvalue())
        assert r.status_code == 201 and r.json()["shape"] == [1, 1, 16, 16]  # resized to the model's


@pytest.mark.parametrize("body,fragment", [
    (_npy_header((10**12,)), "holds 16 bytes of data"),
    (_npy_header((2**40, 2**40)), "holds 16 bytes of data"),
    (_npy(np.zeros((0, 6), np.float32)), "with no values"),
    (_npy(np.zeros((2, 6), np.complex64)), "complex numbers"),
    (_npy(np.array(1.0, np.float32)), "a single number"),
    (_npy(np.zeros(3, dtype=[("a", "<f4"), ("b", "<f4")])), "structured array"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': 'nope'", "not a readable .npy header"),
], ids=["1e12", "2^80", "zero-rows", "complex", "scalar", "structured", "bad-header"])
def test_npy_headers_are_checked_before_loading(client, body, fragment) -> None:
    r = _upload(client, "mlp", body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_a_csv_with_cr_only_line_endings_is_read(client) -> None:
    rows = np.arange(18, dtype=np.float32).reshape(3, 6)
    text = "\r".join(",".join(f"{v:g}" for v in r) for r in rows) + "\r"
    r = _upload(client, "mlp", text.encode())
    assert r.status_code == 201, r.text
    up = client.app.state.store.uploads[r.json()["id"]]
    np.testing.assert_array_equal(up.x.numpy(), rows)


def test_a_huge_csv_cell_is_a_422(client) -> None:
    body = b"1,2,3,4,5," + b"9" * 140_000 + b"\n"
    with TestClient(_app(max_upload_bytes=256 * 1024)) as c:
        r = _upload(c, "mlp", body)
    assert r.status_code == 422, r.text
    assert "cell" in r.json()["detail"] and "characters" in r.json()["detail"]
    r = _upload(client, "mlp", b"1,2,3,4,5," + b"7" * 2000 + b"\n")  # under the CSV module's limit
    assert r.status_code == 422 and "a cell of 2000 characters" in r.json()["detail"]


# -- tables read right ---------------------------------------------------------------------

ROWS = np.round(np.random.default_rng(1).normal(size=(4, 6)), 3).astype(np.float32)
NAMES = ["a", "b", "c", "d", "e", "f"]


def _csv(sep: str, *, header: bool = True, bom: bool = False, newline: str = "\n") -> bytes:
    lines = ([sep.join(NAMES)] if header else []) + [sep.join(f"{v:g}" for v in r) for r in ROWS]
    return (b"\xef\xbb\xbf" if bom else b"") + (newline.join(lines) + newline).encode()


@pytest.mark.parametrize("body", [
    _csv(",", bom=True), _csv(";"), _csv("\t"), _csv(";", bom=True, newline="\r\n"),
    _csv(",", header=False, bom=True), _csv("\t", header=False, newline="\r"),
], ids=["bom", "semicolon", "tab", "semicolon-bom-crlf", "bom-no-header", "tab-cr"])
def test_bom_and_separators_give_the_same_rows(client, body) -> None:
    r = _upload(client, "mlp", body)
    assert r.status_code == 201, r.text
    assert r.json()["rows"] == 4  # the header (even behind a BOM) is not a row
    np.testing.assert_array_equal(client.app.state.store.uploads[r.json()["id"]].x.numpy(), ROWS)


def test_read_table_reports_header_cells_and_separator() -> None:
    from unveil.serve._uploads import read_table

    t = read_table(_csv(";", bom=True))
    assert t.header == NAMES and t.separator == ";" and t.shape == (4, 6)
    assert t.cells[0, 0] == f"{ROWS[0, 0]:g}"
    np.testing.assert_array_equal(t.numbers(), ROWS)
    with pytest.raises(InputError, match="decimal commas"):
        read_table(b"1,5;2,5\n3,5;4,5\n").numbers()


@pytest.mark.parametrize("body,fragment", [
    (("\n".join(["a,b,c,d,e,f"]) + "\n").encode(), "a header but no data rows"),
    (b"\xef\xbb\xbf\n\n", "no rows"),
    (b"1,2,3,4,5,6\n1,2,3\n", "row 2 has 3 columns, expected 6"),
], ids=["header-only", "blank", "ragged"])
def test_tables_without_rows_or_with_ragged_rows_are_a_422(client, body, fragment) -> None:
    r = _upload(client, "mlp", body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


# -- work off the event loop -------------------------------------------------------------------

def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["response"] = fn()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_an_upload_is_parsed_off_the_event_loop(monkeypatch) -> None:
    from unveil.serve import _routes as routes

    started, release = threading.Event(), threading.Event()
    real = routes.parse_upload  # type: ignore[attr-defined]

    def slow_parse(*a: Any, **kw: Any) -> Any:
        started.set()
        assert release.wait(WAIT)
        return real(*a, **kw)

    monkeypatch.setattr(routes, "parse_upload", slow_parse)
    with TestClient(_app()) as c:
        t, out = _in_thread(lambda: _upload(c, "mlp", b"1,2,3,4,5,6\n"))
        try:
            assert started.wait(WAIT)
            assert c.get("/api/health").status_code == 200  # answered while the parse waits
            assert t.is_alive() and not release.is_set()
        finally:
            release.set()
            t.join(WAIT)
        assert out["response"].status_code == 201


def test_a_heavy_request_does_not_hold_light_ones(monkeypatch) -> None:
    """A sanity check blocked inside its work (as a long exact-Shapley run would be): health,
    the model list and an explanation of the same model all answer meanwhile."""
    import unveil.metrics

    started, release = threading.Event(), threading.Event()
    real = unveil.metrics.sanity_check

    def slow_check(*a: Any, **kw: Any) -> Any:
        started.set()
        assert release.wait(WAIT)
        return real(*a, **kw)

    monkeypatch.setattr(unveil.metrics, "sanity_check", slow_check)
    with TestClient(_app()) as c:
        t, out = _in_thread(lambda: c.post("/api/sanity", json={"model": "mlp", "sample": 0,
                                                                "method": "saliency"}))
        try:
            assert started.wait(WAIT)
            assert c.get("/api/health").status_code == 200
            assert {m["name"] for m in c.get("/api/models").json()} == {"mlp", "cnn"}
            r = c.post("/api/explain", json={"model": "mlp", "sample": 1, "methods": ["saliency"],
                                             "evaluate": False})
            assert r.status_code == 200 and r.json()["maps"][0]["status"] == "ok"
            assert t.is_alive() and not release.is_set()  # the heavy one is still waiting
        finally:
            release.set()
            t.join(WAIT)
        assert out["response"].status_code == 200, out["response"].text


def test_a_request_over_its_budget_is_a_503_and_its_work_stops(monkeypatch) -> None:
    """The job runs the model until it is stopped: past the budget the client gets a 503 that
    says what to do, the job's next forward pass raises, and the model serves the next request."""
    import unveil.metrics
    from unveil.serve._work import Stopped

    stopped, passes = threading.Event(), []

    def endless_check(model: Any, x: torch.Tensor, **_kw: Any) -> Any:
        try:
            for _ in range(10_000_000):
                with torch.no_grad():
                    model(x)
                passes.append(1)
        except Stopped:
            stopped.set()
            raise
        raise AssertionError("the job was never stopped")

    monkeypatch.setattr(unveil.metrics, "sanity_check", endless_check)
    with TestClient(_app(time_budget=0.5)) as c:
        r = c.post("/api/sanity", json={"model": "mlp", "sample": 0, "method": "saliency"})
        assert r.status_code == 503, r.text
        assert "--time-budget" in r.json()["detail"] and "cheaper method" in r.json()["detail"]
        assert stopped.wait(WAIT) and passes  # it ran, then its next forward pass stopped it
        ok = c.post("/api/explain", json={"model": "mlp", "sample": 0, "methods": ["saliency"],
                                          "evaluate": False})
        assert ok.status_code == 200
        app: Any = c.app
        assert not app.state.store.entries["mlp"]._model._forward_pre_hooks  # the watch is gone


def test_models_that_are_not_modules_run_one_job_at_a_time() -> None:
    from unveil.serve._work import _JOBS, Job, Work

    work = Work(workers=2, time_budget=5)
    inside, release = threading.Event(), threading.Event()
    got: list[str] = []

    def first() -> None:
        _JOBS[threading.get_ident()] = Job(5)
        with work.hold("f", lambda a: a):
            inside.set()
            release.wait(WAIT)
        del _JOBS[threading.get_ident()]

    def second() -> None:
        _JOBS[threading.get_ident()] = Job(0.05)  # gives up waiting for the first
        try:
            with work.hold("f", lambda a: a):
                got.append("ran")
        except BaseException as exc:  # Stopped
            got.append(type(exc).__name__)
        del _JOBS[threading.get_ident()]

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(WAIT)
    second()
    release.set()
    t.join(WAIT)
    assert got == ["Stopped"]
    work.shutdown()


# -- strict request bodies -------------------------------------------------------------------

@pytest.mark.parametrize("path,body", [
    ("/api/explain", {"model": "mlp", "sample": True, "methods": ["saliency"]}),
    ("/api/explain", {"model": "mlp", "sample": "1", "methods": ["saliency"]}),
    ("/api/explain", {"model": "mlp", "sample": 1.5, "methods": ["saliency"]}),
    ("/api/explain", {"model": "mlp", "sample": 0, "methods": ["saliency"], "target": True}),
    ("/api/explain", {"model": "mlp", "sample": 0, "methods": ["saliency"], "evaluate": "yes"}),
    ("/api/explain", {"model": "mlp", "sample": 0, "methods": ["saliency"], "evaluate": 1}),
    ("/api/sanity", {"model": "mlp", "sample": False, "method": "saliency"}),
    ("/api/distill", {"model": "mlp", "max_depth": True}),
    ("/api/audit", {"model": "mlp", "sensitive": "x5", "positive": "1"}),
    ("/api/whatif", {"model": "mlp", "sample": "1", "methods": ["saliency"],
                     "edit": {"kind": "values", "values": {"x0": 1.0}}}),
    ("/api/whatif", {"model": "mlp", "sample": 0, "methods": ["saliency"], "evaluate": 1,
                     "edit": {"kind": "values", "values": {"x0": 1.0}}}),
])
def test_request_bodies_are_strict(client, path, body) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("invalid request: ")


def test_an_integral_float_is_an_integer_as_json_schema_says(client) -> None:
    one = client.post("/api/explain", json={"model": "mlp", "sample": 1, "methods": ["saliency"],
                                            "evaluate": False}).json()
    same = client.post("/api/explain", json={"model": "mlp", "sample": 1.0, "methods": ["saliency"],
                                             "evaluate": False})
    assert same.status_code == 200 and same.json()["maps"][0]["html"] == one["maps"][0]["html"]


# -- who may write ---------------------------------------------------------------------------------

@pytest.mark.parametrize("headers,status", [
    ({"origin": "http://evil.example", "content-type": "text/plain"}, 403),
    ({"origin": "null"}, 403),
    ({"sec-fetch-site": "cross-site"}, 403),
    ({"sec-fetch-site": "same-site"}, 403),
    ({"origin": "http://testserver", "sec-fetch-site": "same-origin"}, 201),
    ({}, 201),  # not a browser (curl, scripts): no Origin, nothing to forge
])
def test_uploads_from_other_sites_are_refused(client, headers, status) -> None:
    r = _upload(client, "mlp", b"1,2,3,4,5,6\n", headers=headers)
    assert r.status_code == status, r.text
    if status == 403:
        assert "cross-origin" in r.json()["detail"]
    r = client.post("/api/explain", json={"model": "mlp", "sample": 0, "methods": ["saliency"],
                                          "evaluate": False}, headers=headers)
    assert r.status_code == (403 if status == 403 else 200)
    r = client.post("/api/whatif", json={"model": "mlp", "sample": 0, "methods": ["saliency"],
                                         "edit": {"kind": "values", "values": {"x0": 1.0}}}, headers=headers)
    assert r.status_code == (403 if status == 403 else 200)


def test_the_test_clients_host_is_served_only_to_the_test_client() -> None:
    app = _app()
    with TestClient(app, client=("127.0.0.1", 40000)) as c:  # as a real peer would come
        r = c.get("/api/health")
        assert r.status_code == 400 and "does not serve the host 'testserver'" in r.json()["detail"]
        assert c.get("/api/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
        assert c.get("/api/health", headers={"host": "[::1]:8000"}).status_code == 200
        assert c.get("/api/health", headers={"host": "evil.example"}).status_code == 400
    with TestClient(_app(allowed_hosts=["dash.lan"]), client=("10.0.0.2", 40000)) as c:
        assert c.get("/api/health", headers={"host": "dash.lan:8000"}).status_code == 200
        assert c.get("/api/health", headers={"host": "localhost"}).status_code == 400


@pytest.mark.parametrize("name", ["bad name", "a/b", "", "x" * 101, "é", "mlp\n"])
def test_bad_model_names_fail_when_the_app_is_built(name) -> None:
    with pytest.raises(InputError, match="cannot be served"):
        create_app(models={name: mlp()}, zoo=False)


def test_the_schema_lists_the_models_and_methods(client) -> None:
    import unveil as uv

    schema = client.get("/openapi.json").json()
    for name in ("ExplainRequest", "WhatIfRequest"):
        req = schema["components"]["schemas"][name]
        assert req["properties"]["model"]["enum"] == ["mlp", "cnn"]
        assert set(req["properties"]["methods"]["items"]["enum"]) == {m.name for m in uv.methods()}
    params = schema["paths"]["/api/models/{model}/uploads"]["post"]["parameters"]
    assert params[0]["schema"]["enum"] == ["mlp", "cnn"]


# -- the command -----------------------------------------------------------------------------------

def test_serve_on_a_busy_port_is_one_error_line(capsys) -> None:
    pytest.importorskip("uvicorn")
    from unveil.cli import main

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as exc:
            main(["serve", "--port", str(port), "--no-zoo"])
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""  # no banner
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unveil: error: cannot serve on 127.0.0.1:")
    assert "in use" in lines[0] and "--port" in lines[0]
