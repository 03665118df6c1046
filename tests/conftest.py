"""Fixtures shared by every test module."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `_util`

# `make test` runs two xdist workers on two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic() -> Iterator[None]:
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Use UNVEIL_CACHE from the environment (CI points it at a fresh folder), else a session one."""
    if not os.environ.get("UNVEIL_CACHE"):
        os.environ["UNVEIL_CACHE"] = str(Path.home() / ".cache" / "unveil-tests")


@pytest.fixture
def torchvision_stub() -> Iterator[None]:
    """Put the repo's torchvision stand-in into sys.modules for one test, and remove it after.

    Never for the whole session: transformers checks ``find_spec("torchvision")``.
    """
    stubs = str(ROOT / "stubs")
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    sys.path.insert(0, stubs)
    try:
        for k in saved:
            del sys.modules[k]
        importlib.import_module("torchvision")
        yield
    finally:
        sys.path.remove(stubs)
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.modules.update(saved)
