"""The dashboard: a FastAPI app serving one page, its own JS/CSS, and a JSON API.

Security: the app is meant for loopback (``unveil serve`` binds 127.0.0.1 and only accepts
loopback ``Host`` headers unless told otherwise); request bodies are capped (JSON and uploads
separately); uploads are read by content (images, ``.npy`` without pickle, CSV) and never
unpickled; nothing from a request names a filesystem path (models, samples, uploads and runs are
chosen by name, index or random id); bad input gets a 4xx with a message. The OpenAPI schema is
at ``/openapi.json``; the interactive docs are off because they load assets from a CDN.
"""

from __future__ import annotations

import html as _html
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UnveilError, require
from ..version import __version__
from ._state import ApiError, Store

__all__ = ["DEFAULT_BUDGET", "create_app"]

HERE = Path(__file__).resolve().parent
#: Options given to every method that declares them (small: the dashboard must answer quickly).
DEFAULT_BUDGET: dict[str, Any] = {"n_steps": 32, "n_samples": 128, "seed": 0, "batch_size": 64}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]", "testserver"]
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

    Returns
    -------
    fastapi.FastAPI
    """
    require("fastapi", "serve")
    require("jinja2", "serve")
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from ._global import global_router
    from ._routes import api_router, page_router
    from ._whatif import whatif_router

    store = Store.build(models, samples, zoo=zoo, budget=dict(budget or DEFAULT_BUDGET),
                        max_upload_bytes=max_upload_bytes, max_rows=max_rows)
    app = FastAPI(title="unveil dashboard", version=__version__, docs_url=None, redoc_url=None,
                  description="Explain models, compare methods, check the explanations.")
    app.state.store = store

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(UnveilError)
    async def _unveil_error(_r: Request, exc: UnveilError) -> JSONResponse:
        return JSONResponse({"detail": str(exc).splitlines()[0] if str(exc) else type(exc).__name__},
                            status_code=422)

    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_BodyLimit, max_json=max_json_bytes, max_upload=max_upload_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(page_router(HERE / "templates"))
    app.include_router(api_router(store))
    app.include_router(global_router(store))
    app.include_router(whatif_router(store))
    return app


def explanation_bytes(exp: Any) -> bytes:
    """The ``.npz`` bytes of an Explanation (written in a private temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="unveil-") as tmp:
        path = exp.save(Path(tmp) / "explanation.npz")
        return bytes(Path(path).read_bytes())


def escape(text: str) -> str:
    """HTML-escape ``text`` (quotes included)."""
    return _html.escape(text, quote=True)


