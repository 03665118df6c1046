"""Training recipes of the zoo models and the one function that builds a model from the cache.

Training is deterministic for a given torch build: parameters are initialised and batches
shuffled from ``SEED`` inside :func:`torch.random.fork_rng`, so the caller's global random state
is left as it was. It runs on one intra-op thread (restored afterwards): these models are too small
to gain from more, the result then does not depend on the caller's thread count, and a busy
machine (parallel test workers) does not slow OpenMP's spinning threads to a crawl.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from unveil.zoo._architectures import BreastCancerMLP, DigitsCNN
from unveil.zoo._cache import load_or_train
from unveil.zoo._data import DATA_RECIPES, ZooData, load_dataset
from unveil.zoo.fitting import one_thread

__all__ = ["RECIPES", "RECIPE_VERSION", "SEED", "Recipe", "build", "identity", "train"]

logger = logging.getLogger("unveil.zoo")

#: Bump when training changes in a way the recipe fields do not show; cached files then retrain.
RECIPE_VERSION = "2"
SEED = 0


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is trained: Adam on cross-entropy, shuffled minibatches.

    ``batch_size=None`` means full batch; ``schedule="one_cycle"`` uses
    :class:`torch.optim.lr_scheduler.OneCycleLR` peaking at ``lr``.
    """

    architecture: type[nn.Module]
    lr: float
    epochs: int
    batch_size: int | None
    schedule: Literal["constant", "one_cycle"] = "constant"

    def as_dict(self) -> dict[str, object]:
        """Return the JSON-serialisable fields that identify this recipe."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["architecture"] = self.architecture.__name__
        return {"optimizer": "adam", "loss": "cross_entropy", **fields}


RECIPES: dict[str, Recipe] = {
    "digits_cnn": Recipe(DigitsCNN, lr=3e-3, epochs=15, batch_size=64, schedule="one_cycle"),
    "marked_digits_cnn": Recipe(DigitsCNN, lr=3e-3, epochs=15, batch_size=64, schedule="one_cycle"),
    "breast_cancer_mlp": Recipe(BreastCancerMLP, lr=1e-3, epochs=200, batch_size=None),
}


def identity(name: str) -> dict[str, object]:
    """Return the metadata that must match for cached weights of ``name`` to be used."""
    recipe = RECIPES[name]
    return {
        "name": name,
        "architecture": recipe.architecture.__name__,
        "recipe": {**recipe.as_dict(), "data": DATA_RECIPES[name]},
        "recipe_version": RECIPE_VERSION,
        "seed": SEED,
        "torch_version": torch.__version__,
        "sklearn_version": importlib.metadata.version("scikit-learn"),
    }


def _fit(model: nn.Module, data: ZooData, recipe: Recipe, generator: torch.Generator) -> None:
    n = int(data.y_train.shape[0])
    batch = recipe.batch_size or n
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    scheduler = None
    if recipe.schedule == "one_cycle":
        total = recipe.epochs * math.ceil(n / batch)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=total
        )
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            loss = F.cross_entropy(model(data.X_train[rows]), data.y_train[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).float().mean())


def train(name: str) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Train zoo model ``name`` from scratch; return its state dict and facts about the run."""
    recipe = RECIPES[name]
    data = load_dataset(name)
    logger.info("training zoo model %s", name)
    start, start_cpu = time.perf_counter(), time.process_time()
    with one_thread(), torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(SEED)
        model = recipe.architecture()
        scaler = getattr(model, "standardize", None)
        if scaler is not None:  # a table model: its standardisation comes from the training rows
            scaler.fit(data.X_train)
        generator = torch.Generator().manual_seed(SEED)
        _fit(model, data, recipe, generator)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        accuracy = _accuracy(model, data.X_test, data.y_test)
    logger.info("trained zoo model %s in %.1f s; test accuracy %.4f", name, seconds, accuracy)
    info: dict[str, object] = {
        "train_seconds": round(seconds, 3),
        "test_accuracy": accuracy,
        "cpu_seconds": round(cpu_seconds, 3),
    }
    return {key: t.detach().clone() for key, t in model.state_dict().items()}, info


def build(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, retrain: bool = False
) -> nn.Module:
    """Return zoo model ``name`` in eval mode, with weights from the cache or freshly trained.

    The module carries its data's names as ``class_names`` (and ``feature_names`` for tables),
    which :class:`unveil.Model` reads: ``uv.explain(zoo_model, x)`` names classes and columns.
    """
    recipe = RECIPES[name]
    with torch.inference_mode(False):
        with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
            model = recipe.architecture()
        template: Mapping[str, tuple[tuple[int, ...], torch.dtype]] = {
            key: (tuple(t.shape), t.dtype) for key, t in model.state_dict().items()
        }
        state = load_or_train(
            name,
            identity(name),
            lambda: train(name),
            template,
            cache_dir=cache_dir,
            retrain=retrain,
        )
        model.load_state_dict(state)
    data = load_dataset(name)
    # names for unveil.Model to read (plain attributes: not in the state dict or the weights)
    object.__setattr__(model, "class_names", list(data.class_names))  # not a submodule: plain
    if data.feature_names is not None:
        object.__setattr__(model, "feature_names", list(data.feature_names))
    return model.eval()
