"""The dashboard: a FastAPI app serving one page, its own JS/CSS, and a JSON API.

Security: the app is meant for loopback (``unveil serve`` binds 127.0.0.1 and only accepts
loopback ``Host`` headers unless told otherwise); writes come only from its own page (a
browser's ``Origin`` and ``Sec-Fetch-Site`` say so); request bodies are capped (JSON and uploads
separately); uploads are read by content (images, ``.npy`` without pickle, CSV) with the sizes
their headers declare checked before allocation, and never unpickled; heavy work runs on worker
threads within a time budget; nothing from a request names a filesystem path (models, samples, uploads and runs are
chosen by name, index or random id); bad input gets a 4xx with a message. The OpenAPI schema is
at ``/openapi.json``; the interactive docs are off because they load assets from a CDN.
"""

from __future__ import annotations

import contextlib
import copy
import html as _html
import math
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError, UnveilError, require
from ..version import __version__
from ._state import ApiError, Store
from ._uploads import DEFAULT_MAX_PIXELS
from ._work import DEFAULT_TIME_BUDGET, DEFAULT_WORKERS, Work

__all__ = ["DEFAULT_BUDGET", "LOOPBACK_HOSTS", "MODEL_NAME", "create_app"]

HERE = Path(__file__).resolve().parent
#: Options given to every method that declares them (small: the dashboard must answer quickly).
DEFAULT_BUDGET: dict[str, Any] = {"n_steps": 32, "n_samples": 128, "seed": 0, "batch_size": 64}
#: ``Host`` headers accepted by default. (Starlette's TestClient, whose requests come from the
#: client "testclient" and say ``Host: testserver``, is let in too; no real peer has that address.)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: What a model's name may be (it appears in URLs and in the API's schema).
MODEL_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")


class _BodyLimit:
    """ASGI middleware: refuse request bodies over a size (413), uploads having their own cap."""

    def __init__(self, app: Any, *, max_json: int, max_upload: int) -> None:
        self.app, self.max_json, self.max_upload = app, max_json, max_upload

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        limit = self.max_upload if scope["path"].endswith("/uploads") else self.max_json
        msg = f"request body too large: the limit is {limit} bytes"
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, msg)
            return message

        await self.app(scope, limited, send)


class _Guard:
    """ASGI middleware: only the allowed ``Host`` names (against DNS rebinding), and writes
    (POST…) only from the dashboard's own pages or from clients that are not browsers: a
    browser's ``Origin`` must name this host and its ``Sec-Fetch-Site`` must be same-origin
    (a page on another site cannot post an upload, even as a "simple" form request)."""

    def __init__(self, app: Any, *, allowed_hosts: list[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.lower().strip("[]") for h in allowed_hosts}

    def _refusal(self, scope: Any) -> tuple[int, str] | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        try:
            name = urlsplit(f"//{host}").hostname if host else None
        except ValueError:  # e.g. an unclosed "[" of an IPv6 address
            name = None
        testing = (scope.get("client") or ("",))[0] == "testclient" and name == "testserver"
        if not self.any_host and not testing and (name is None or name.lower() not in self.hosts):
            return 400, (f"this dashboard does not serve the host {host!r}; start it with "
                         "--allowed-host NAME to serve another name")
        if scope.get("method") not in _UNSAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        try:
            foreign = origin is not None and urlsplit(origin).netloc.lower() != host.lower()
        except ValueError:
            foreign = True
        if foreign or (site is not None and site not in ("same-origin", "none")):
            return 403, "cross-origin writes are refused: use the dashboard's own page"
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                from starlette.responses import JSONResponse

                await JSONResponse({"detail": refusal[1]}, status_code=refusal[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nonfinite(value: Any, depth: int = 0) -> bool:
    """Whether a parsed JSON value holds NaN or an infinite number."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth > 20:
        return False
    if isinstance(value, dict):
        return any(_nonfinite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_nonfinite(v, depth + 1) for v in value)
    return False


def validation_message(errors: Any) -> str:
    """One line from pydantic's validation errors; the offending values are not echoed (they
    may not even be JSON: NaN, Infinity)."""
    parts = []
    for err in list(errors)[:4]:
        if err.get("type") == "json_invalid":
            where = err.get("loc", ())[-1:]
            reason = (err.get("ctx") or {}).get("error", "")
            parts.append(f"the body is not valid JSON ({reason}"
                         f"{f' at character {where[0]}' if where else ''}); send a JSON object")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        msg = str(err.get("msg", "invalid value"))
        if _nonfinite(err.get("input")):
            msg = "NaN, Infinity and numbers beyond ±1.8e308 are not accepted; " + msg[:1].lower() + msg[1:]
        parts.append(f"{loc}: {msg}")
    more = len(list(errors)) - len(parts)
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _check_names(models: dict[str, Any] | None) -> None:
    for name in models or {}:
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise InputError(f"model name {name!r} cannot be served: use 1 to 100 letters, digits "
                             "and _ . : - (the name appears in URLs)")


def _with_enums(schema: dict[str, Any], models: list[str], methods: list[str]) -> dict[str, Any]:
    """The OpenAPI schema with the names the dashboard accepts listed (models, methods)."""
    schema = copy.deepcopy(schema)
    comps = schema.get("components", {}).get("schemas", {})
    for comp in ("ExplainRequest", "SanityRequest", "DistillRequest", "AuditRequest", "WhatIfRequest",
                 "CounterfactualRequest", "AnchorRequest",
                 "GenerateRequest", "LensRequest", "PatchRequest", "HeadsRequest"):
        props = comps.get(comp, {}).get("properties", {})
        if "model" in props:
            props["model"]["enum"] = models
    for comp in ("ExplainRequest", "WhatIfRequest"):
        props = comps.get(comp, {}).get("properties", {})
        if "methods" in props:
            props["methods"]["items"]["enum"] = methods
    sanity = comps.get("SanityRequest", {}).get("properties", {})
    if "method" in sanity:
        sanity["method"]["enum"] = methods
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            for param in op.get("parameters", []) if isinstance(op, dict) else []:
                if param.get("in") == "path" and param.get("name") == "model":
                    param["schema"]["enum"] = models
                elif param.get("in") == "path" and param.get("name") == "method":
                    param["schema"]["enum"] = methods
    return schema


class _SecurityHeaders:
    """ASGI middleware: a strict Content-Security-Policy (own assets only) on every response."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer")]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    models: dict[str, Any] | None = None,
    *,
    zoo: bool = True,
    samples: dict[str, Any] | None = None,
    max_upload_bytes: int = 2 * 1024 * 1024,
    max_json_bytes: int = 64 * 1024,
    max_rows: int = 64,
    budget: dict[str, Any] | None = None,
    allowed_hosts: list[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    time_budget: float = DEFAULT_TIME_BUDGET,
    workers: int = DEFAULT_WORKERS,
) -> Any:
    """Build the dashboard app.

    Parameters
    ----------
    models : dict, optional
        Extra models by name: a model object or a :class:`unveil.frontends.LoadedModel`.
    zoo : bool
        Offer the zoo models (loaded, and trained if not cached, on first use).
    samples : dict, optional
        Sample inputs (N, ...) for the extra models, by name.
    max_upload_bytes, max_json_bytes : int
        Caps on an upload and on a JSON request body (413 above them).
    max_rows : int
        Most rows an upload may hold.
    budget : dict, optional
        Options for every method that declares them (default :data:`DEFAULT_BUDGET`).
    allowed_hosts : list of str, optional
        Accepted ``Host`` headers (default: loopback names; ``["*"]`` accepts any).
    max_pixels : int
        Most pixels (width x height) an uploaded image may declare (default 4096 x 4096).
    time_budget : float
        Seconds a heavy request (explain, sanity check, surrogate, audit) may take, waiting for
        a worker included; past it the request gets a 503 and its work is stopped.
    workers : int
        Threads for heavy requests (light ones never wait for them).

    Returns
    -------
    fastapi.FastAPI
    """
    require("fastapi", "serve")
    require("jinja2", "serve")
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.staticfiles import StaticFiles

    from ..core.registry import list_methods
    from ._concept_maps import concept_maps_router
    from ._concepts import concepts_router
    from ._global import global_router
    from ._language import language_router
    from ._recourse import recourse_router
    from ._routes import api_router, page_router
    from ._training_data import training_data_router
    from ._whatif import whatif_router

    _check_names(models)
    if max_pixels < 1:
        raise InputError(f"max_pixels must be at least 1, got {max_pixels}")
    hosts = list(allowed_hosts or LOOPBACK_HOSTS)
    store = Store.build(models, samples, zoo=zoo, budget=dict(budget or DEFAULT_BUDGET),
                        max_upload_bytes=max_upload_bytes, max_rows=max_rows)
    work = Work(workers=workers, time_budget=time_budget)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        work.shutdown()

    app = FastAPI(title="unveil dashboard", version=__version__, docs_url=None, redoc_url=None,
                  description="Explain models, compare methods, check the explanations.",
                  lifespan=lifespan)
    app.state.store = store
    app.state.work = work
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return _with_enums(plain_openapi(), list(store.entries), [m.name for m in list_methods()])

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(UnveilError)
    async def _unveil_error(_r: Request, exc: UnveilError) -> JSONResponse:
        return JSONResponse({"detail": str(exc).splitlines()[0] if str(exc) else type(exc).__name__},
                            status_code=422)

    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_BodyLimit, max_json=max_json_bytes, max_upload=max_upload_bytes)
    app.add_middleware(_Guard, allowed_hosts=hosts)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(page_router(HERE / "templates"))
    app.include_router(api_router(store, work, max_pixels=max_pixels))
    app.include_router(global_router(store, work))
    app.include_router(whatif_router(store, work))
    app.include_router(recourse_router(store, work))
    app.include_router(language_router(store, work))
    app.include_router(concept_maps_router(store, work))
    app.include_router(training_data_router(store, work))
    app.include_router(concepts_router(store, work))
    return app


def explanation_bytes(exp: Any) -> bytes:
    """The ``.npz`` bytes of an Explanation (written in a private temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="unveil-") as tmp:
        path = exp.save(Path(tmp) / "explanation.npz")
        return bytes(Path(path).read_bytes())


def escape(text: str) -> str:
    """HTML-escape ``text`` (quotes included)."""
    return _html.escape(text, quote=True)


