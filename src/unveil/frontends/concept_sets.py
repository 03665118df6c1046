"""Concept example sets from files, for ``unveil tcav`` (and the dashboard's uploads).

A concept is given as ``NAME=PATH``: ``PATH`` is one ``.npy`` file holding a batch of examples,
or a folder whose files (images, ``.npy``, ``.csv``; sorted by name, hidden files skipped) are
stacked — the same readers as ``--input``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .inputs import load_inputs
from .loading import LoadedModel
from .wording import PYTHON, Wording

__all__ = ["class_inputs", "parse_concept", "read_example_set"]


def parse_concept(spec: str, *, wording: Wording = PYTHON) -> tuple[str, str]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``; a bare path is named after its file or folder."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, Path(spec.rstrip("/")).stem
    name, path = name.strip(), path.strip()
    if not name or not path:
        raise InputError(f"a concept is NAME=PATH (a .npy file or a folder of examples); got "
                         f"{spec!r}")
    return name, path


def read_example_set(path: str, loaded: LoadedModel, *, wording: Wording = PYTHON) -> torch.Tensor:
    """The examples in ``path`` (a file, a folder of files, or ``zoo:NAME``) as one batch."""
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise InputError(f"the concept folder {path} holds no files; put images or .npy "
                             "files of the concept's examples in it")
        return load_inputs(files, loaded, wording=wording).x
    return load_inputs([path], loaded, wording=wording).x


def class_inputs(sources: Sequence[str], loaded: LoadedModel, target: int, *,
                 wording: Wording = PYTHON) -> tuple[torch.Tensor, str]:
    """The inputs to score: the given files, or a zoo model's test rows labelled ``target``."""
    if sources:
        return load_inputs(sources, loaded, wording=wording).x, "the given inputs"
    if loaded.zoo:
        from ..zoo import load_dataset

        data = load_dataset(loaded.zoo)
        x = data.X_test[data.y_test == target]
        return x, f"the test rows of class {target} of zoo:{loaded.zoo}"
    raise InputError(f"give the inputs of the class with {wording.give('sources', 'FILE')}")


def random_pool(path: str | None, loaded: LoadedModel, *, wording: Wording = PYTHON) -> Any:
    """Rows random sets are drawn from: ``path``, or a zoo model's training rows."""
    if path is not None:
        return read_example_set(path, loaded, wording=wording)
    if loaded.zoo:
        from ..zoo import load_dataset

        return load_dataset(loaded.zoo).X_train
    raise InputError("give the random pool (e.g. a sample of the training data) with "
                     "--random-pool PATH")
