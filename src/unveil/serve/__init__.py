"""The local web dashboard (``unveil serve``; needs the ``serve`` extra).

``create_app(...)`` builds the FastAPI app; importing this package does not import FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the dashboard app; see :func:`unveil.serve.app.create_app`."""
    from .app import create_app as _create

    return _create(*args, **kwargs)
