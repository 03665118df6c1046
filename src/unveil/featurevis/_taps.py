"""Read a model's intermediate activations during a forward pass, stopping early when possible.

Every feature-visualization routine needs one or more layers' outputs for a batch. :func:`taps`
attaches forward hooks for the duration of a ``with`` block (removed in ``finally``) and returns
a function ``run(x) -> {layer: activation}``. When the model's final output is not needed, the
forward pass is cut short right after the last requested layer has run, which skips the rest of
the network (and its backward pass).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..core.hooks import StopForward, first_tensor, forward_hooks
from ..core.model import Model
from ..errors import ModelError

__all__ = ["INPUT", "OUTPUT", "Acts", "taps"]

#: reserved activation key for the model's scores (what :meth:`Model.forward` returns)
OUTPUT = "output"
#: reserved activation key for the input image before any per-step transformation
INPUT = "input"

Acts = dict[str, torch.Tensor]


@contextlib.contextmanager
def taps(
    model: Model, layers: Sequence[str], *, need_output: bool, stop_early: bool = True
) -> Iterator[Callable[[torch.Tensor], Acts]]:
    """Yield ``run(x)`` returning the named layers' outputs (and ``"output"`` if asked for).

    A module called several times in one forward pass contributes its first call's output.
    Hooks are removed when the block exits, whatever happens inside it.
    """
    names = [n for n in dict.fromkeys(layers) if n not in (INPUT, OUTPUT)]
    modules: dict[str, nn.Module] = {n: model.layer(n) for n in names}
    store: Acts = {}
    stop = stop_early and not need_output and bool(modules)

    def make(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if name not in store:
                store[name] = first_tensor(out)
            if stop and len(store) == len(modules):
                raise StopForward

        return hook

    with forward_hooks([(m, make(n)) for n, m in modules.items()]):

        def run(x: torch.Tensor) -> Acts:
            store.clear()
            try:
                out: torch.Tensor | None = model.forward(x)
            except StopForward:
                model.n_evals += int(x.shape[0])
                out = None
            missing = [n for n in modules if n not in store]
            if missing:
                raise ModelError(
                    f"layer(s) {', '.join(map(repr, missing))} did not run during the forward "
                    "pass; pick layers the model actually calls in forward()"
                )
            acts = dict(store)
            store.clear()
            if out is not None:
                acts[OUTPUT] = out
            return acts

        yield run
