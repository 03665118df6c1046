"""Models for the front ends: ``zoo:NAME``, ``package.module:factory`` (an import path, called
without arguments), pickled files (refused unless ``allow_pickle``) and safetensors weights."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .wording import PYTHON, Wording

__all__ = ["PICKLE_SUFFIXES", "LoadedModel", "load_model", "zoo_names"]

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".joblib", ".bin", ".ckpt")


@dataclass
class LoadedModel:
    """A model and what is known about it (names, modality, the zoo data it came with)."""

    model: Any
    name: str
    description: str = ""
    modality: str | None = None
    sample_shape: tuple[int, ...] | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    zoo: str | None = None
    tokenizer: Any = None


def zoo_names() -> list[str]:
    """The names of the zoo models."""
    from ..zoo import ZOO

    return sorted(ZOO)


def _zoo_model(name: str) -> LoadedModel:
    from ..zoo import ZOO, load_dataset

    if name not in ZOO:
        raise ModelError(f"no zoo model named {name!r}; the zoo has: {', '.join(sorted(ZOO))}")
    entry = ZOO[name]
    data = load_dataset(name)
    return LoadedModel(entry.factory(), name=f"zoo:{name}", description=entry.description,
                       modality=entry.modality, sample_shape=tuple(data.X_test.shape[1:]),
                       class_names=list(data.class_names), feature_names=data.feature_names,
                       zoo=name)


def _import_object(spec: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"model {spec!r} is not 'package.module:factory' nor 'zoo:NAME'")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the working directory import
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"cannot import module {mod_name!r} for model {spec!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"module {mod_name!r} has no attribute {attr!r} (model {spec!r})")
        obj = getattr(obj, part)
    return obj


def _load_pickled(path: Path, allow_pickle: bool, w: Wording) -> Any:
    if not allow_pickle:
        raise ModelError(
            f"{path} is a pickle-based file, and loading it can run arbitrary code; {_if_trusted(w)}"
            f"give {w.give('model', 'package.module:factory')} {w.give('weights', 'FILE.safetensors')}"
        )
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    if path.suffix in (".pkl", ".pickle"):
        import pickle

        with open(path, "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - the user asked for it with allow_pickle
    return torch.load(path, map_location="cpu", weights_only=False)


def _if_trusted(w: Wording) -> str:
    """The way to accept a pickle, when the caller has one."""
    return f"pass {w.switch('allow_pickle')} if you trust it, or " if w.offers("allow_pickle") else ""


def _load_weights(model: Any, weights: str, allow_pickle: bool, w: Wording) -> None:
    path = Path(weights)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{w.name('weights')} needs a torch.nn.Module, but the model is "
                         f"{type(model).__name__}")
    if not path.is_file():
        raise FileNotFoundError(2, "no such weights file", str(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    elif path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelError(f"{path} is a pickle-based file; {_if_trusted(w)}convert it to .safetensors")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ModelError(f"weights must be a .safetensors file, got {path.name!r}")
    missing, unexpected = _state_mismatch(model, state)
    if missing or unexpected:
        raise ModelError(
            f"the weights in {path.name} do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; check that the factory builds the same architecture"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"cannot load {path.name}: {str(exc).splitlines()[0]}") from exc


def _state_mismatch(model: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


def load_model(spec: str, *, weights: str | None = None, allow_pickle: bool = False,
               wording: Wording = PYTHON) -> LoadedModel:
    """Resolve ``zoo:NAME``, ``package.module:factory`` or a pickled file (with ``allow_pickle``).

    A factory (function or class) is called without arguments; an object is used as it is.
    ``wording`` names the caller's settings in error messages (the CLI's flags).
    """
    w = wording
    path = Path(spec)
    if spec.startswith("zoo:"):
        loaded = _zoo_model(spec[4:])
    elif path.suffix == ".safetensors":
        raise ModelError(f"{spec} holds weights only; pass {w.give('model', 'package.module:factory')} "
                         f"{w.give('weights', spec)}")
    elif path.suffix in PICKLE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(2, "no such model file", spec)
        obj = _load_pickled(path, allow_pickle, w)
        if isinstance(obj, dict):
            raise ModelError(f"{spec} holds a state dict, not a model; pass "
                             f"{w.give('model', 'package.module:factory')} {w.give('weights', 'FILE')}")
        loaded = LoadedModel(obj, name=path.name)
    else:
        obj = _import_object(spec)
        if isinstance(obj, type) or (callable(obj) and not isinstance(obj, nn.Module)
                                     and not hasattr(obj, "predict")):
            try:
                obj = obj()
            except TypeError as exc:
                raise ModelError(f"calling the factory {spec!r} without arguments failed: {exc}") from exc
        loaded = LoadedModel(obj, name=spec, tokenizer=getattr(obj, "tokenizer", None))
    if weights is not None:
        _load_weights(loaded.model, weights, allow_pickle, w)
    if not callable(loaded.model) and not hasattr(loaded.model, "predict"):
        raise ModelError(f"model {spec!r} resolved to a {type(loaded.model).__name__}, which is "
                         "not callable")
    return loaded
