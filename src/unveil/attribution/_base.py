"""The contract every attribution method keeps, and the shared steps of a call."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..core.batching import BatchSize, map_chunked, resolve_batch_size
from ..core.explanation import Explanation
from ..core.modality import infer_modality
from ..core.model import Model, TargetSpec, as_model

__all__ = ["Attributor", "Call"]


@dataclass
class Call:
    """The validated state of one call: inputs, targets, outputs, and a clock."""

    model: Model
    x: torch.Tensor
    targets: torch.Tensor | None
    outputs: torch.Tensor  # target score per row at the input, (N,)
    all_outputs: torch.Tensor  # every score per row, (N, K) or (N,)
    evals_at_start: int
    t0: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    def tick(self, phase: str) -> None:
        """Record the seconds since the last tick under ``phase``."""
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self.t0
        self.t0 = now


class Attributor(abc.ABC):
    """Base of all attribution methods.

    ``__init__`` only stores configuration (no hooks, no mode changes). ``__call__`` validates
    the inputs and target, runs the method with the model in eval mode and its parameters
    frozen (both restored afterwards, also on error), and returns an :class:`Explanation`.
    """

    name: ClassVar[str] = "attributor"

    def __init__(self, model: Any, *, batch_size: BatchSize = "auto") -> None:
        self.model = as_model(model)
        self.batch_size = resolve_batch_size(batch_size)

    # subclasses implement this; it runs inside the model guard
    @abc.abstractmethod
    def _attribute(self, call: Call, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return at least ``values`` (shaped like the inputs) plus any Explanation fields."""

    def params(self) -> dict[str, Any]:
        """The options that define this method's result (for the Explanation)."""
        return {
            k: v for k, v in vars(self).items() if k not in ("model",) and not k.startswith("_")
        }

    def __call__(self, inputs: Any, *, target: TargetSpec = "predicted", **kwargs: Any) -> Explanation:
        model = self.model
        x = model.prepare(inputs)
        with model.guard():
            start = model.n_evals
            t0 = time.perf_counter()
            with torch.inference_mode():
                all_out = self.predict(x)
            targets = model.resolve_targets(target, all_out)
            call = Call(
                model=model,
                x=x,
                targets=targets,
                outputs=Model.select(all_out, targets).clone(),
                all_outputs=all_out.clone(),
                evals_at_start=start,
            )
            call.timings["forward"] = time.perf_counter() - t0
            call.t0 = time.perf_counter()
            result = self._attribute(call, **kwargs)
            call.tick("attribute")
        return self._explanation(call, result)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """All scores for ``x``, chunked (call under ``inference_mode``)."""
        return map_chunked(
            lambda a, b: self.model.forward(x[a:b]),
            x.shape[0],
            batch_size=self.batch_size,
            model=self.model,
            key=("predict", tuple(x.shape[1:])),
        )

    def _explanation(self, call: Call, result: dict[str, Any]) -> Explanation:
        values = _numpy(result.pop("values"))
        for k in ("baseline_outputs", "delta", "stderr"):
            if k in result:
                result[k] = _numpy(result[k])
        params = {**self.params(), **result.pop("params", {})}
        return Explanation(
            values=values,
            inputs=_numpy(call.x),
            method=self.name,
            targets=None if call.targets is None else _numpy(call.targets),
            outputs=_numpy(call.outputs),
            params=params,
            n_evals=call.model.n_evals - call.evals_at_start,
            timings=call.timings,
            modality=result.pop("modality", infer_modality(call.x)),
            _fingerprint_fn=call.model.fingerprint,
            **result,
        )


def _numpy(t: Any) -> Any:
    """A detached CPU numpy copy of a tensor (arrays pass through)."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return t
