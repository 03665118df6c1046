"""Top-level API: explain, the registry, and a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import unveil as uv
from _util import mlp
from unveil.errors import UnknownMethodError


def test_import_is_light() -> None:
    code = (
        "import sys, unveil; heavy = [m for m in ('matplotlib', 'skimage', 'transformers', 'fastapi',"
        " 'starlette', 'uvicorn', 'jinja2', 'dask', 'pandas') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_lists_methods() -> None:
    names = {m.name for m in uv.methods()}
    assert {"saliency", "integrated_gradients"} <= names
    info = {m.name: m for m in uv.methods()}["integrated_gradients"]
    assert info.needs_gradients and "image" in info.modalities


def test_unknown_method() -> None:
    with pytest.raises(UnknownMethodError, match="Did you mean 'integrated_gradients'"):
        uv.explain(mlp(), torch.randn(2, 6), method="integrated_gradient")


def test_explain_splits_options() -> None:
    e = uv.explain(mlp().eval(), torch.randn(2, 6), method="integrated_gradients", n_steps=5, baseline=0.5, target=1)
    assert e.params["n_steps"] == 5 and e.params["baseline"] == 0.5
    assert e.targets.tolist() == [1, 1]


def test_dir_lists_the_lazy_names() -> None:
    listed = dir(uv)
    assert {"distill", "evaluate", "sanity_check", "bias_audit", "Explainer", "zoo"} <= set(listed)
    assert "explain" in listed and "_LAZY" not in listed
    assert "distill" not in vars(uv) or callable(uv.distill)  # listing loads nothing by itself
