"""The contract every attribution method keeps, and the shared steps of a call.

A call runs in three steps: :meth:`Attributor._first_pass` evaluates the model and resolves the
targets (a :class:`FirstPass`), :meth:`Attributor._attribute` computes the method's result (a
:class:`Partial`), and :meth:`Attributor._explanation` turns it into the
:class:`~unveil.core.explanation.Explanation`. A method that gets its attribution from the same
pass as the scores (CAMs, LRP, Saliency) overrides ``_first_pass`` and hands what it computed to
``_attribute`` in ``call.first_pass``.
"""

from __future__ import annotations

import abc
import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.batching import BatchSize, map_chunked, resolve_batch_size
from ..core.explanation import Explanation
from ..core.hooks import layer_name
from ..core.modality import infer_modality
from ..core.model import Model, TargetSpec, as_model, frame_columns, token_strings
from ..core.options import suggest
from ..core.quality import mark_degenerate
from ..core.reference import Reference
from ..core.registry import MethodInfo, get_method
from ..errors import OptionError, UnveilError

__all__ = ["Attributor", "Call", "FirstPass", "Partial", "refuse_options"]

#: ``background=`` rows serve as the model's data (for the in-distribution check) from this many
#: rows on, with this margin (a share of each feature's range, on each side).
MIN_BACKGROUND_ROWS = 20
BACKGROUND_MARGIN = 0.25


@dataclass
class Partial:
    """A method's result before it becomes an :class:`Explanation` (what ``_attribute`` returns).

    ``values`` is shaped like the inputs (or like a layer's output, or ``(N, T)`` for token ids);
    ``baseline_outputs``, ``delta`` and ``stderr`` have one entry per row (``stderr``: per
    value). ``extras`` holds arrays (tensors are converted), ``params`` is merged over the
    method's :meth:`Attributor.params`, and ``modality=None`` means "inferred from the inputs".
    """

    values: torch.Tensor
    baseline_outputs: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    stderr: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] | None = None
    modality: str | None = None
    seed: int | None = None

    def add(
        self,
        *,
        params: dict[str, Any] | None = None,
        extras: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Partial:
        """Merge entries into ``params``, ``extras`` and ``meta`` (new keys win); returns self."""
        self.params.update(params or {})
        self.extras.update(extras or {})
        self.meta.update(meta or {})
        return self


@dataclass
class FirstPass:
    """What the first pass of a call found: every score per row, the resolved targets, and what
    a method's own first pass leaves for ``_attribute`` (``state``, ``None`` by default)."""

    all_outputs: torch.Tensor  # every score per row, (N, K) or (N,)
    targets: torch.Tensor | None
    state: Any = None


@dataclass
class Call:
    """The validated state of one call: inputs, targets, outputs, and a clock."""

    model: Model
    x: torch.Tensor
    targets: torch.Tensor | None
    outputs: torch.Tensor  # target score per row at the input, (N,)
    all_outputs: torch.Tensor  # every score per row, (N, K) or (N,)
    evals_at_start: int
    first_pass: Any = None  # FirstPass.state: a method's own first pass, for its _attribute
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
                options = _named_layers(model, options)
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
    def _attribute(self, call: Call, *args: Any, **kwargs: Any) -> Partial:
        """The method's result for ``call`` (the call options come as keywords)."""

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
        kwargs = _named_layers(self.model, kwargs)
        names = self._common_call_options(kwargs, target)
        columns = frame_columns(inputs)
        exp = self._run(inputs, target=target, **kwargs)
        self._name(exp, names, columns)
        self._judge(exp, kwargs.get("background"))
        return exp

    def _name(self, exp: Explanation, given: dict[str, Any], columns: list[str] | None) -> None:
        """Names from where they are known, the first found wins: the call's ``feature_names=``
        / ``class_names=``, a DataFrame's columns, then the model's (``uv.Model(feature_names=)``,
        an estimator's ``feature_names_in_`` / ``classes_``, a module's ``feature_names`` /
        ``class_names``). The model's feature names are dropped when their count does not fit
        a table's columns. A text model with a ``tokenizer`` gives ``meta["tokens"]``."""
        if given.get("feature_names") is not None:
            exp.feature_names = [str(v) for v in given["feature_names"]]
        elif columns is not None:
            exp.feature_names = columns
        elif self.model.feature_names is not None:
            width = int(exp.inputs[0].size) if exp.inputs.ndim >= 2 else -1
            if exp.modality != "tabular" or len(self.model.feature_names) == width:
                exp.feature_names = list(self.model.feature_names)
        if given.get("class_names") is not None:
            exp.class_names = [str(v) for v in given["class_names"]]
        elif self.model.class_names is not None:
            exp.class_names = list(self.model.class_names)
        if exp.modality == "text" and "tokens" not in exp.meta:
            tokens = token_strings(self.model.obj, exp.inputs)
            if tokens is not None:
                exp.meta["tokens"] = tokens

    def _judge(self, exp: Explanation, background: Any) -> None:
        """Quality facts every explanation gets: degenerate rows (``quality["degenerate"]``) and
        rows outside the model's data (``quality["in_distribution"]``, when the data is known:
        the model's ``reference=`` rows, else the call's ``background=`` rows)."""
        info = self.declaration()
        mark_degenerate(exp, info.family if info is not None else "")
        ref = self.model.reference
        if ref is None and background is not None and exp.modality in ("tabular", "image"):
            try:  # a sample of the data: its extremes are narrower, so a wider margin
                ref = Reference(background, feature_names=exp.feature_names,
                                margin=BACKGROUND_MARGIN)
            except UnveilError:
                ref = None  # not rows at all: nothing to compare with
            if ref is not None and ref.n_rows < MIN_BACKGROUND_ROWS:
                ref = None  # too few rows to say what the data's range is
        if ref is not None and exp.modality in ("tabular", "image", "sequence"):
            try:
                exp.quality["in_distribution"] = ref.check(exp.inputs,
                                                           feature_names=exp.feature_names)
            except UnveilError:
                pass  # reference rows of another shape (e.g. token ids against embeddings)

    def _run(self, inputs: Any, *, target: TargetSpec = "predicted", **kwargs: Any) -> Explanation:
        """The call after its options were checked: validate, guard the model, attribute."""
        model = self.model
        x = model.prepare(inputs)
        with model.guard():
            start = model.n_evals
            t0 = time.perf_counter()
            first = self._first_pass(x, target, **kwargs)
            call = Call(
                model=model,
                x=x,
                targets=first.targets,
                outputs=Model.select(first.all_outputs, first.targets).clone(),
                all_outputs=first.all_outputs.clone(),
                evals_at_start=start,
                first_pass=first.state,
            )
            call.timings["forward"] = time.perf_counter() - t0
            call.t0 = time.perf_counter()
            result = self._attribute(call, **kwargs)
            call.tick("attribute")
        return self._explanation(call, result)

    def _first_pass(self, x: torch.Tensor, target: TargetSpec, **kwargs: Any) -> FirstPass:
        """Every score for ``x`` and the resolved targets (``kwargs``: the call options).

        The default runs the model once under ``inference_mode``. A method whose attribution
        comes out of the same pass overrides this to do its work here, returning what
        ``_attribute`` needs as ``state`` (it must not keep per-call state on ``self``: one
        instance may serve several threads). Raises the usual target errors.
        """
        with torch.inference_mode():
            all_out = self.predict(x)
        return FirstPass(all_out, self.model.resolve_targets(target, all_out))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """All scores for ``x``, chunked (call under ``inference_mode``)."""
        return map_chunked(
            lambda a, b: self.model.forward(x[a:b]),
            x.shape[0],
            batch_size=self.batch_size,
            model=self.model,
            key=("predict", tuple(x.shape[1:])),
        )

    def _explanation(self, call: Call, result: Partial) -> Explanation:
        """The Explanation of ``call`` from the method's result (the one place it is built)."""
        if not isinstance(result, Partial):
            raise TypeError(
                f"{type(self).__name__}._attribute returned {type(result).__name__}; it must "
                "return an unveil.attribution.Partial(values=...)"
            )
        return Explanation(
            values=_numpy(result.values),
            inputs=_numpy(call.x),
            method=self.name,
            targets=None if call.targets is None else _numpy(call.targets),
            outputs=_numpy(call.outputs),
            baseline_outputs=_numpy(result.baseline_outputs),
            params={**self.params(), **result.params},
            seed=result.seed,
            stderr=_numpy(result.stderr),
            delta=_numpy(result.delta),
            n_evals=call.model.n_evals - call.evals_at_start,
            timings=call.timings,
            groups=result.groups,
            extras=dict(result.extras),
            meta=dict(result.meta),
            modality=result.modality or infer_modality(call.x),
            _fingerprint_fn=call.model.fingerprint,
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


def _named_layers(model: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``layer=`` (and a ``neuron=`` tuple's layer) given as a module of the model become its
    dotted name, so that every method, its params and saved files see names."""
    layer, neuron = options.get("layer"), options.get("neuron")
    neuron_layer = neuron[0] if isinstance(neuron, tuple) and neuron else None
    if not isinstance(layer, nn.Module) and not isinstance(neuron_layer, nn.Module):
        return options
    root = model.module if isinstance(model, Model) else model
    root = root if isinstance(root, nn.Module) else None
    out = dict(options)
    if isinstance(layer, nn.Module):
        out["layer"] = layer_name(root, layer)
    if isinstance(neuron_layer, nn.Module) and isinstance(neuron, tuple):
        out["neuron"] = (layer_name(root, neuron_layer), *neuron[1:])
    return out


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
