"""Pieces every metric shares: the result type, reading an Explanation back into tensors,
scoring perturbed inputs in chunks, and re-explaining through the registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..core.batching import BatchSize, resolve_batch_size, run_chunked
from ..core.explanation import Explanation
from ..core.groups import FeatureGroups
from ..core.model import Model, TargetSpec, as_model
from ..core.options import Option, check_value
from ..core.registry import get_method
from ..errors import InputError, OptionError

__all__ = [
    "ExplainFn",
    "MetricResult",
    "Output",
    "Prepared",
    "Reexplainer",
    "element_values",
    "groups_of",
    "nanmean",
    "prepare",
    "score_rows",
]

Output = Literal["probs", "logits", "accuracy"]
ExplainFn = Callable[[torch.Tensor, "torch.Tensor | None"], Any]


@dataclass
class MetricResult:
    """The figures of one metric on a batch of explanations.

    Attributes
    ----------
    name : str
        The metric's name (the key it takes in ``exp.quality``).
    value : float
        The batch figure: the mean of ``per_sample`` over samples where it is defined.
    per_sample : ndarray
        One figure per explained sample, (N,); NaN where undefined (e.g. an empty mask).
    higher_is_better : bool or None
        Which direction means a better explanation (``None`` when neither does).
    details : dict
        Metric-specific figures: curves, their x-axis, per-layer similarities...
    params : dict
        The options the metric ran with.
    """

    name: str
    value: float
    per_sample: np.ndarray
    higher_is_better: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (arrays become nested lists, NaN becomes ``None``)."""
        return {
            "value": _plain(self.value),
            "per_sample": _plain(self.per_sample),
            "higher_is_better": self.higher_is_better,
            "details": _plain(self.details),
            "params": _plain(self.params),
        }

    def __float__(self) -> float:
        return float(self.value)


def _plain(obj: Any) -> Any:
    """Arrays and tensors to lists, NaN to None, recursively."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return repr(obj)


def nanmean(t: torch.Tensor | np.ndarray) -> float:
    """Mean over the finite entries (NaN when there are none)."""
    a = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


@dataclass
class Prepared:
    """An explanation read back into tensors on the model's device."""

    model: Model
    exp: Explanation
    x: torch.Tensor  # (N, *shape) validated inputs
    targets: torch.Tensor | None  # (N,) or None for one-output models
    values: torch.Tensor  # (N, *shape) element-level attributions, float

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4 and self.x.is_floating_point()


def groups_of(exp: Explanation) -> FeatureGroups | None:
    """The :class:`FeatureGroups` stored in an explanation, if any."""
    g = exp.groups
    if not g:
        return None
    n_groups, names = int(g["n_groups"]), [str(s) for s in g.get("names") or []]
    kind = str(g.get("kind", "custom"))
    if g.get("labels") is not None:
        return FeatureGroups(n_groups, names, kind, labels=torch.as_tensor(np.asarray(g["labels"])))
    if g.get("masks") is not None:
        return FeatureGroups(n_groups, names, kind, mask_tensor=torch.as_tensor(np.asarray(g["masks"])))
    return None


def element_values(exp: Explanation, x: torch.Tensor) -> torch.Tensor:
    """Attributions shaped like the inputs ``x`` (group-level maps spread over their groups,
    single-channel image maps broadcast over the channels)."""
    v = torch.as_tensor(np.asarray(exp.values)).to(device=x.device)
    v = v.to(torch.float32 if not v.is_floating_point() else v.dtype)
    if tuple(v.shape) == tuple(x.shape):
        return v
    groups = groups_of(exp)
    if groups is not None and v.ndim == 2 and v.shape == (x.shape[0], groups.n_groups):
        return groups.expand(v.cpu()).to(device=x.device, dtype=v.dtype)
    if x.ndim == 4 and v.ndim == 3 and tuple(v.shape) == (x.shape[0], *x.shape[2:]):
        v = v.unsqueeze(1)
    if x.ndim == 4 and v.ndim == 4 and v.shape[1] == 1 and v.shape[0] == x.shape[0] \
            and tuple(v.shape[2:]) == tuple(x.shape[2:]):
        return v.expand_as(x)
    raise InputError(
        f"attributions of shape {tuple(v.shape)} do not fit inputs of shape {tuple(x.shape)}; "
        "give maps shaped like the inputs, (N, H, W) maps for images, or group-level (N, G) "
        "values together with the explanation's groups"
    )


def _targets(model: Model, exp: Explanation, x: torch.Tensor, target: TargetSpec | str) -> torch.Tensor | None:
    if target == "explained":
        if exp.targets is not None:
            t = torch.as_tensor(np.asarray(exp.targets)).long().to(x.device)
            if t.shape != (x.shape[0],):
                raise InputError(f"the explanation holds {tuple(t.shape)} targets for {x.shape[0]} inputs")
            return t
        target = "predicted"
    with torch.inference_mode(), model.guard():
        out = model.forward(x[:1]) if target is None else _forward_all(model, x)
    return model.resolve_targets(target, out)


def _forward_all(model: Model, x: torch.Tensor) -> torch.Tensor:
    out = run_chunked(lambda a, b: model.forward(x[a:b]), x.shape[0], model=model,
                      key=("metrics.forward", tuple(x.shape[1:])))
    assert out is not None
    return out


def prepare(model: Any, exp: Explanation, *, target: TargetSpec | str = "explained") -> Prepared:
    """Read ``exp`` back: validated inputs, the explained targets and element-level values."""
    if not isinstance(exp, Explanation):
        raise InputError(f"expected an unveil Explanation, got {type(exp).__name__}; make one with uv.explain")
    m = as_model(model)
    x = m.prepare(exp.inputs)
    values = element_values(exp, x)
    if not bool(torch.isfinite(values).all()):
        raise InputError("the explanation's values contain NaN or infinite entries")
    return Prepared(model=m, exp=exp, x=x, targets=_targets(m, exp, x, target), values=values.to(torch.float32))


def _select(out: torch.Tensor, targets: torch.Tensor | None, output: Output) -> torch.Tensor:
    if output == "accuracy":
        if out.ndim == 1 or targets is None:
            raise OptionError("output='accuracy' needs a model with one score per class")
        return (out.argmax(-1) == targets).float()
    if output == "probs":
        out = torch.sigmoid(out) if out.ndim == 1 else torch.softmax(out, dim=-1)
    elif output != "logits":
        raise OptionError(f"output must be 'probs', 'logits' or 'accuracy', got {output!r}")
    return Model.select(out, targets)


def score_rows(
    model: Model,
    build: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    total: int,
    targets: torch.Tensor | None,
    *,
    output: Output = "probs",
    batch_size: BatchSize = "auto",
    key: tuple[Any, ...],
) -> torch.Tensor:
    """Target scores of ``total`` perturbed rows, chunked: ``build(a, b)`` returns the inputs of
    rows ``a..b`` and the sample each row belongs to. Runs in eval mode, without gradients."""
    resolve_batch_size(batch_size)

    def run(a: int, b: int) -> torch.Tensor:
        xs, rows = build(a, b)
        return _select(model.forward(xs), None if targets is None else targets[rows], output)

    with model.guard(), torch.inference_mode():
        out = run_chunked(run, total, batch_size=batch_size, model=model, key=("metrics", *key))
    assert out is not None
    return out.float()


class Reexplainer:
    """Explains new inputs with a registered method: ``Reexplainer(model, "saliency", options)``
    or, the way an explanation was made, :meth:`of` (the options stored in ``exp.params``).

    The method's declaration (see :func:`unveil.options`) says which options go to its
    constructor and which to its call; given options it does not declare raise
    :class:`~unveil.errors.OptionError`, stored ones it does not declare are dropped.
    ``explain_fn(x, targets)``, when given, is used instead (it returns values or an
    Explanation). Called with inputs (M, ...) and targets (M,) it returns element-level values
    (M, ...).
    """

    def __init__(
        self,
        model: Model,
        method: str,
        options: Mapping[str, Any] | None = None,
        *,
        explain_fn: ExplainFn | None = None,
        stored: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.method = method
        self.explain_fn = explain_fn
        self.call_options: dict[str, Any] = {}
        if explain_fn is not None:
            return
        from ..core.explain import make_explainer

        declared = get_method(method).options
        given = dict(options or {})
        for k in given:
            if k not in declared:
                raise OptionError(declared.unknown_message(k))
        if "target" in given:
            raise OptionError(f"{method!r}: the targets are the metric's; target= is not an "
                              "option of the re-explanation")
        opts = {k: v for k, v in (stored or {}).items() if k in declared and k != "target"}
        opts.update(given)
        for k, v in opts.items():
            if isinstance(v, str) and (v == "tensor" or v.startswith("<")):
                raise OptionError(
                    f"the explanation was made with {k}= a tensor, which it does not store; pass "
                    f"explain_options={{'{k}': <the same tensor>}} to re-explain new inputs"
                )
        declared.check(given)
        self.call_options = {k: v for k, v in opts.items() if declared[k].where == "call"}
        self.explainer = make_explainer(
            model, method, **{k: v for k, v in opts.items() if declared[k].where == "init"})

    @classmethod
    def of(
        cls,
        model: Model,
        exp: Explanation,
        *,
        explain_fn: ExplainFn | None = None,
        explain_options: Mapping[str, Any] | None = None,
        method: str | None = None,
    ) -> Reexplainer:
        """Re-explain like ``exp`` (with ``method``, another registered method instead)."""
        same = explain_fn is None and (method is None or method == exp.method)
        stored = stored_options(exp) if same else {}
        return cls(model, method or exp.method, explain_options, explain_fn=explain_fn, stored=stored)

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        if self.explain_fn is not None:
            out = self.explain_fn(x, targets)
            if not isinstance(out, Explanation):
                v = torch.as_tensor(out).detach()
                out = Explanation(values=v.cpu().numpy(), inputs=x.detach().cpu().numpy(), method="fn")
            return element_values(out, x).to(torch.float32)
        exp = self.explainer(x, target=targets, **self.call_options)
        return element_values(exp, x).to(torch.float32)


def stored_options(exp: Explanation) -> dict[str, Any]:
    """The options ``exp`` was made with that its method declares (plus its seed, for a method
    that takes one), e.g. to explain other inputs the same way.

    A stored value that no longer fits the declared type (a tuple read back from JSON as a
    list is turned back into a tuple) is dropped, so the method's default applies. Placeholders
    of tensors that were not stored stay in, so that :class:`Reexplainer` can ask for them.
    """
    info = get_method(exp.method)
    out: dict[str, Any] = {}
    for k, v in exp.params.items():
        if k not in info.options or k == "target":
            continue
        if isinstance(v, str) and (v == "tensor" or v.startswith("<")):
            out[k] = v
            continue
        fitted = _fit(info.options[k], v)
        if fitted is not _MISFIT:
            out[k] = fitted
    if exp.seed is not None and info.takes_seed:
        out.setdefault("seed", exp.seed)
    return out


_MISFIT: Any = object()


def _fit(opt: Option, value: Any) -> Any:
    """``value`` as the option takes it (a list read back from JSON may be a tuple), or
    ``_MISFIT``."""
    for v in (value, tuple(value) if isinstance(value, list) else _MISFIT):
        if v is not _MISFIT and check_value(v, opt.type):
            return v
    return _MISFIT


def accepts(method: str, option: str) -> bool:
    """Whether the registered ``method`` declares ``option`` (see :func:`unveil.options`)."""
    return option in get_method(method).options
