"""The contract every attribution method keeps, and the shared steps of a call."""

from __future__ import annotations

import abc
import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..core.batching import BatchSize, map_chunked, resolve_batch_size
from ..core.explanation import Explanation
from ..core.modality import infer_modality
from ..core.model import Model, TargetSpec, as_model
from ..core.options import suggest
from ..core.registry import MethodInfo, get_method
from ..errors import OptionError

__all__ = ["Attributor", "Call", "refuse_options"]


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check constructor options against the method's declaration before ``__init__``."""
        super().__init_subclass__(**kwargs)
        # a class without its own constructor gets a checked one too (its declaration may differ)
        init = cls.__dict__.get("__init__", cls.__init__)

        @functools.wraps(init)
        def checked(self: Attributor, model: Any, *args: Any, **options: Any) -> None:
            if type(self) is owner:  # the outermost constructor checks; super() calls do not
                info = self.declaration()
                if info is not None:
                    _check_where(info, options, "init")
            init(self, model, *args, **options)

        owner = cls
        cls.__init__ = checked  # type: ignore[method-assign]  # the same constructor, checked first

    @classmethod
    def declaration(cls) -> MethodInfo | None:
        """The registry's declaration of this class (``None`` for an unregistered class)."""
        name = cls.__dict__.get("name")
        if not isinstance(name, str):
            return None
        try:
            info = get_method(name)
        except LookupError:
            return None
        return info if info.cls is cls else None

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

    def _common_call_options(self, kwargs: dict[str, Any], target: Any) -> dict[str, Any]:
        """Check the call options (``target`` too) against the declaration; take out the common
        ones the base handles (``feature_names``, ``class_names``; ``seed`` for methods without
        randomness)."""
        info = self.declaration()
        if info is None:
            return {}
        _check_where(info, {"target": target, **kwargs}, "call")
        names: dict[str, Any] = {
            k: kwargs.pop(k) for k in ("feature_names", "class_names") if k in kwargs
        }
        if not info.takes_seed:
            kwargs.pop("seed", None)
        return names

    def __call__(self, inputs: Any, *, target: TargetSpec = "predicted", **kwargs: Any) -> Explanation:
        names = self._common_call_options(kwargs, target)
        exp = self._run(inputs, target=target, **kwargs)
        for key, value in names.items():
            if value is not None:
                setattr(exp, key, [str(v) for v in value])
        return exp

    def _run(self, inputs: Any, *, target: TargetSpec = "predicted", **kwargs: Any) -> Explanation:
        """The call after its options were checked: validate, guard the model, attribute."""
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


def _check_where(info: MethodInfo, options: Mapping[str, Any], where: str) -> None:
    """Check ``options`` against the declaration and that each belongs ``where`` it was given."""
    info.options.check(options)
    wrong = sorted(k for k in options if info.options[k].where != where)
    if wrong:
        given, other = ("constructor", "call") if where == "init" else ("call", "constructor")
        raise OptionError(
            f"{info.name!r}: {', '.join(wrong)} {'is an option' if len(wrong) == 1 else 'are options'} "
            f"of the {other}, not of the {given} (uv.explain takes both)"
        )


def refuse_options(method: str, extra: Mapping[str, Any], takes: Iterable[str]) -> None:
    """Raise :class:`OptionError` for call options ``extra`` that a method does not take.

    A registered method never gets here (``__call__`` checks its declaration first); this
    guards subclasses without a declaration, in the same words.
    """
    if extra:
        key, names = sorted(extra)[0], sorted(takes)
        raise OptionError(f"{method!r} takes no option {key!r}.{suggest(key, names)} Valid "
                          f"options of the call: {', '.join(names)}")


def _numpy(t: Any) -> Any:
    """A detached CPU numpy copy of a tensor (arrays pass through)."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return t
