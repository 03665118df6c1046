"""Models for the front ends: ``zoo:NAME``, ``package.module:factory`` (an import path, called
without arguments), pickled files (refused unless ``allow_pickle``) and safetensors weights.

The module of ``package.module:factory`` may live in the working directory, as with
``python -m``: the working directory goes to the front of ``sys.path`` while that module is
imported and its factory called, and leaves it afterwards, so that a folder there (``PIL/``)
never shadows what the library imports later.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .wording import PYTHON, Wording

__all__ = ["PICKLE_SUFFIXES", "LoadedModel", "load_model", "load_object", "zoo_names"]

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".joblib", ".bin", ".ckpt")

#: What a model is, for messages.
EXPECTED = ("a torch.nn.Module, a scikit-learn estimator (with predict_proba, or predict and fit) "
            "or a callable model")

_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.BuiltinMethodType, types.WrapperDescriptorType,
                      types.MethodWrapperType, types.MethodDescriptorType,
                      types.ClassMethodDescriptorType)


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
    reference: Any = None  # rows of the model's data (the zoo's training split), if known

    def with_data(self, rows: Any = None, feature_names: Sequence[str] | None = None) -> Any:
        """The model to explain: wrapped in :class:`unveil.Model` with ``reference=`` (``rows``,
        else the model's own data) so that inputs far from the data are flagged; the model as
        it is when no data is known or the rows are not numeric."""
        from ..core.model import Model, as_model

        ref = self.reference if rows is None else rows
        if ref is None or isinstance(self.model, Model):
            return self.model
        return as_model(self.model).with_data(ref, feature_names=feature_names or self.feature_names,
                                              class_names=self.class_names)


def zoo_names() -> list[str]:
    """The names of the zoo models."""
    from ..zoo import ZOO

    return sorted(ZOO)


def _zoo_model(name: str) -> LoadedModel:
    from ..zoo import ZOO, load_dataset

    if name not in ZOO:
        from .lm import LANGUAGE_ZOO_NAMES, language_zoo_model

        lm = language_zoo_model(name)  # a language model (loaded with its tokenizer)
        if lm is not None:
            return lm
        raise ModelError(f"no zoo model named {name!r}; the zoo has: "
                         f"{', '.join(sorted([*ZOO, *LANGUAGE_ZOO_NAMES]))}")
    entry = ZOO[name]
    data = load_dataset(name)
    return LoadedModel(entry.factory(), name=f"zoo:{name}", description=entry.description,
                       reference=data.X_train,
                       modality=entry.modality, sample_shape=tuple(data.X_test.shape[1:]),
                       class_names=list(data.class_names), feature_names=data.feature_names,
                       zoo=name)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the first line, and the next when the first ends in ':')."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines or [""])[0]
    if len(text) > 120 and ". " in text:  # long library messages: their first sentence
        text = text[:text.index(". ") + 1]
    if len(text) > 200:
        text = text[:199] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _working_directory_importable() -> Iterator[None]:
    """Modules in the working directory import (in front of the others) inside the block only."""
    cwd = os.getcwd()
    if any(isinstance(p, str) and os.path.realpath(p or ".") == os.path.realpath(cwd) for p in sys.path):
        yield  # already importable (``python -m``, an interactive session): leave sys.path alone
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        at = next((i for i, p in enumerate(sys.path) if p is cwd), None)
        if at is not None:
            del sys.path[at]
        elif cwd in sys.path:  # the imported code rebuilt sys.path
            sys.path.remove(cwd)


def _is_builtin(obj: Any) -> bool:
    """Built-in functions and the interpreter's own objects (``exit``, ``help``, ``object``)."""
    if isinstance(obj, type):
        return obj.__module__ == "builtins"
    return isinstance(obj, _BUILTIN_CALLABLES) or type(obj).__module__ == "_sitebuiltins"


def _estimator_like(obj: Any) -> bool:
    return hasattr(obj, "predict_proba") or (hasattr(obj, "predict") and hasattr(obj, "fit"))


def _is_model(obj: Any) -> bool:
    """A module, an estimator, or a callable that is neither a class nor a built-in."""
    if isinstance(obj, type) or _is_builtin(obj):
        return False
    return isinstance(obj, nn.Module) or _estimator_like(obj) or callable(obj)


def _model_class(cls: type) -> bool:
    """Whether instances of ``cls`` can be models (modules, estimators, callables)."""
    return (issubclass(cls, nn.Module) or _estimator_like(cls)
            or any("__call__" in vars(k) for k in cls.__mro__[:-1]))


def _describe(obj: Any) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, type):
        return f"the class {obj.__qualname__!r}"
    if _is_builtin(obj):
        return "a Python built-in"
    return f"an object of type {type(obj).__qualname__!r}"


def _import_object(spec: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"model {spec!r} is not 'package.module:factory' nor 'zoo:NAME'")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"cannot import module {mod_name!r} for model {spec!r}: {exc}") from exc
    except (Exception, SystemExit) as exc:  # not KeyboardInterrupt
        raise ModelError(f"importing module {mod_name!r} for model {spec!r} failed: "
                         f"{_one_line(exc)}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(f"module {mod_name!r} has no attribute {attr!r} (model {spec!r})") from None
        except (Exception, SystemExit) as exc:  # a lazy module's __getattr__ that failed
            raise ModelError(f"getting {attr!r} from module {mod_name!r} failed: {_one_line(exc)}") from exc
    return obj


def _factory_of(spec: str, obj: Any) -> Callable[[], Any] | None:
    """What to call for the model (a function or a model class), or None for a model object."""
    if _is_builtin(obj):
        raise ModelError(f"model {spec!r} is a Python built-in, which is never called as a "
                         f"factory; give a function or class that returns {EXPECTED}")
    if not (callable(obj) or _estimator_like(obj)):
        raise ModelError(f"model {spec!r} is {_describe(obj)}, neither a model nor a factory (a "
                         f"function or class called without arguments); expected {EXPECTED}")
    if isinstance(obj, type):
        if not _model_class(obj):
            raise ModelError(f"model {spec!r} is {_describe(obj)}, whose instances are not "
                             f"models; expected {EXPECTED}, or a factory returning one")
        return obj
    if inspect.isroutine(obj) or isinstance(obj, functools.partial):
        factory: Callable[[], Any] = obj
        return factory
    return None  # a model object: a module, an estimator or a callable instance


def _model_from_spec(spec: str) -> Any:
    """The model that ``package.module:factory`` names: made by the factory, or the object."""
    with _working_directory_importable():
        obj = _import_object(spec)
        factory = _factory_of(spec, obj)
        if factory is None:
            return obj
        try:
            model = factory()
        except (Exception, SystemExit) as exc:  # not KeyboardInterrupt
            raise ModelError(f"calling the factory {spec!r} without arguments failed: "
                             f"{_one_line(exc)}") from exc
    if _with_tokenizer(model):  # (model, tokenizer), as language-model factories return them
        return model
    if not _is_model(model):
        raise ModelError(f"the factory {spec!r} returned {_describe(model)}; expected {EXPECTED}")
    return model


def _with_tokenizer(obj: Any) -> bool:
    """A pair ``(torch module, tokenizer)``: a language model and the tokenizer it reads."""
    return (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], nn.Module)
            and callable(obj[1]) and hasattr(obj[1], "decode"))


def _load_pickled(path: Path, allow_pickle: bool, w: Wording) -> Any:
    if not allow_pickle:
        raise ModelError(
            f"{path} is a pickle-based file, and loading it can run arbitrary code; {_if_trusted(w)}"
            f"give {w.give('model', 'package.module:factory')} {w.give('weights', 'FILE.safetensors')}"
        )
    try:
        with _working_directory_importable():  # the classes it names may live here
            return _unpickle(path)
    except OSError:
        raise
    except (Exception, SystemExit) as exc:
        raise ModelError(f"cannot unpickle {path.name}: {_one_line(exc)}; check that the file is "
                         "complete and that the modules defining the model import from here") from exc


def _unpickle(path: Path) -> Any:
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


def _read_state(path: Path, allow_pickle: bool, w: Wording) -> Mapping[str, Any]:
    """The tensors of a weights file; a pickle only with ``allow_pickle`` (and weights only)."""
    resave = "save them with safetensors.torch.save_file(model.state_dict(), FILE)"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except OSError:
            raise
        except Exception as exc:  # SafetensorError: not safetensors, or cut short
            raise ModelError(f"cannot read the weights in {path.name} ({_one_line(exc)}): the file "
                             f"is not safetensors or is incomplete; {resave}") from exc
    elif path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelError(f"{path} is a pickle-based file; {_if_trusted(w)}convert it to .safetensors")
        try:
            with warnings.catch_warnings():  # its protocol notices would add lines to an error
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot read the weights in {path.name} ({_one_line(exc)}): the file is "
                             f"incomplete or holds more than a state dict of tensors; {resave}") from exc
    else:
        raise ModelError(f"weights must be a .safetensors file, got {path.name!r}")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, Mapping) else []
        raise ModelError(f"{path.name} holds {_describe(state)}{f' with keys {keys}' if keys else ''}, "
                         f"not a state dict of tensors; {resave}")
    return state


def _load_weights(model: Any, weights: str, allow_pickle: bool, w: Wording) -> None:
    path = Path(weights)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{w.name('weights')} needs a torch.nn.Module, but the model is "
                         f"{type(model).__name__}")
    if not path.is_file():
        raise FileNotFoundError(2, "no such weights file", str(path))
    state = _read_state(path, allow_pickle, w)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelError(
            f"the weights in {path.name} do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; check that the factory builds the same architecture"
        )
    shapes = [f"{k} {tuple(state[k].shape)} for {tuple(v.shape)}" for k, v in own.items()
              if tuple(state[k].shape) != tuple(v.shape)]
    if shapes:
        raise ModelError(f"the weights in {path.name} do not fit the model: shapes differ, "
                         f"{'; '.join(shapes[:3])}; check that the factory builds the same architecture")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"cannot load {path.name}: {_one_line(exc)}") from exc


def load_model(spec: str, *, weights: str | None = None, allow_pickle: bool = False,
               wording: Wording = PYTHON) -> LoadedModel:
    """Resolve ``zoo:NAME``, ``package.module:factory`` or a pickled file (with ``allow_pickle``).

    ``factory`` is a function or a model class, called without arguments, or a model object used
    as it is (a module-level instance); a factory may return ``(model, tokenizer)``, as language
    models come. A model is a ``torch.nn.Module``, a scikit-learn estimator
    (``predict_proba``, or ``predict`` and ``fit``) or a callable that is neither a class nor a
    built-in; built-ins (``builtins:exit``) are refused before being called, and what a factory
    raises (``SystemExit`` included) becomes a :class:`ModelError`. ``weights`` are safetensors,
    or a weights-only torch pickle with ``allow_pickle``. ``wording`` names the caller's settings
    in error messages (the CLI's flags).
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
        if not _is_model(obj):
            raise ModelError(f"{spec} holds {_describe(obj)}; expected {EXPECTED}")
        loaded = LoadedModel(obj, name=path.name)
    else:
        obj = _model_from_spec(spec)
        if _with_tokenizer(obj):
            loaded = LoadedModel(obj[0], name=spec, tokenizer=obj[1])
        else:
            loaded = LoadedModel(obj, name=spec, tokenizer=getattr(obj, "tokenizer", None))
    if weights is not None:
        _load_weights(loaded.model, weights, allow_pickle, w)
    return loaded


def load_object(spec: str, what: str, *, factory: bool = False, wording: Wording = PYTHON) -> Any:
    """The object ``package.module:name`` names, for a setting ``what`` (``"preprocess"``,
    ``"tokenizer"``): a class is called without arguments (its instance is the object), and so
    is a function when ``factory`` (a function making a tokenizer); otherwise a function or an
    instance is used as it is (a preprocess function). Errors name the setting."""
    w = wording
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"{w.name(what)} {spec!r} is not 'package.module:name'")
    with _working_directory_importable():
        try:
            obj: Any = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ModelError(f"cannot import module {mod_name!r} for {w.name(what)}: {exc}") from exc
        except (Exception, SystemExit) as exc:
            raise ModelError(f"importing module {mod_name!r} for {w.name(what)} failed: "
                             f"{_one_line(exc)}") from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ModelError(f"module {mod_name!r} has no attribute {attr!r} ({w.name(what)})") from None
        if isinstance(obj, type) or (factory and (inspect.isroutine(obj) or isinstance(obj, functools.partial))):
            try:
                obj = obj()
            except (Exception, SystemExit) as exc:
                raise ModelError(f"calling {spec!r} without arguments for {w.name(what)} failed: "
                                 f"{_one_line(exc)}") from exc
    if _is_builtin(obj) or not callable(obj):
        raise ModelError(f"{w.name(what)} {spec!r} is {_describe(obj)}; expected a function or an "
                         "object that can be called")
    return obj
