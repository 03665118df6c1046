"""The local web dashboard (``unveil serve``; needs the ``serve`` extra).

``create_app(...)`` builds the FastAPI app; importing this package does not import FastAPI.
:class:`ServedModel` gives the dashboard a model with its data (``create_app(models={"name":
ServedModel(model, data="rows.csv", preprocess=...)})``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServedModel", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the dashboard app; see :func:`unveil.serve.app.create_app`."""
    from .app import create_app as _create

    return _create(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ServedModel":
        from ._data import ServedModel

        return ServedModel
    raise AttributeError(f"module 'unveil.serve' has no attribute {name!r}")
