"""Sanity checks (Adebayo et al., 2018, "Sanity Checks for Saliency Maps", NeurIPS).

An explanation that barely changes when the model's weights are replaced by random ones cannot
be explaining what the model learned. :func:`sanity_check` re-initialises the layers of a *copy*
of the model, top layer down, either cumulatively (*cascading*) or one at a time
(*independent*), explains the same inputs after each step, and compares the maps with the
original by Spearman rank correlation of their magnitudes (``"spearman_abs"``) and of their signed
values (``"spearman"``), SSIM and HOG similarity (images). The *random-logit* test (Sixt et al.,
2020, "When Explanations Lie", ICML) compares the map of the explained class with the map of a
random other class. The verdict: the method passes when the similarity is below ``threshold``
once the upper half of the layers is randomised, and after randomising every layer. The first
condition catches what Adebayo et al. saw for guided backprop: maps that stay the same while the
layers that make the decision are random, and change only with the lowest layers, show what those
layers detect (edges), not why the model decided.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..core.explanation import Explanation
from ..core.hooks import copy_module
from ..core.model import Model, TargetSpec, as_model
from ..core.quality import degenerate_rows
from ..errors import LayerNotFoundError, ModelError, OptionError
from ._common import (
    ExplainFn,
    MetricResult,
    Reexplainer,
    _forward_all,
    nanmean,
    prepare,
    stored_options,
)
from .similarity import hog_similarity, spearman, ssim

__all__ = [
    "MEASURES",
    "SanityResult",
    "randomizable_layers",
    "random_logit",
    "sanity_check",
    "sanity_metric",
    "similarities",
]

Measure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ModelExplainFn = Callable[[Any, torch.Tensor, "torch.Tensor | None"], Any]
MEASURES: dict[str, Measure] = {
    "spearman_abs": lambda a, b: spearman(a, b, absolute=True),
    "spearman": lambda a, b: spearman(a, b),
    "ssim": lambda a, b: ssim(a, b),
    "hog": lambda a, b: hog_similarity(a, b),
}
_IMAGE_ONLY = ("ssim", "hog")


@dataclass
class SanityResult:
    """The outcome of :func:`sanity_check`.

    Attributes
    ----------
    passed : bool
        ``upper < threshold`` and ``final < threshold``: the maps change once the upper half of
        the layers is random, and the maps of the fully randomised model are unlike the original.
        ``False`` when the verdict is undefined.
    verdict : str
        ``"passed"``, ``"failed"`` or ``"undefined"`` — when the similarity cannot be measured
        (the original maps, or every randomised map, are constant: e.g. all zero); ``reason``
        then says why, in words (it also explains a failure).
    threshold, measure, final, upper
        The verdict's rule: ``measure``'s mean similarity ``final`` after randomising every
        layer (cascading; for ``mode="independent"`` the mean over layers) and ``upper`` after
        randomising the top ``ceil(L / 2)`` of the ``L`` layers (cascading runs only; else NaN),
        against ``threshold``.
    layers : list of str
        The randomised layers, top layer first.
    similarity : dict
        Cascading randomisation: ``{layer: {measure: mean over samples}}``, in ``layers`` order,
        each entry with every layer up to and including it randomised.
    independent : dict
        The same for independent randomisation (only that layer randomised); empty if not run.
    per_sample : dict
        ``{layer: {measure: (N,) array}}`` for the cascading run (independent if only it ran).
    random_logit : dict
        ``{measure: mean similarity}`` between the maps of the explained class and of a random
        other class (low is good); empty for one-output models.
    """

    passed: bool
    threshold: float
    measure: str
    final: float
    method: str
    mode: str
    layers: list[str]
    upper: float = math.nan
    similarity: dict[str, dict[str, float]] = field(default_factory=dict)
    independent: dict[str, dict[str, float]] = field(default_factory=dict)
    per_sample: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    random_logit: dict[str, float] = field(default_factory=dict)
    verdict: Literal["passed", "failed", "undefined"] = "failed"
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the figures (per-sample arrays as lists)."""
        from ._common import _plain

        return {k: _plain(v) for k, v in self.__dict__.items()}

    def __str__(self) -> str:
        word = {"passed": "passes", "failed": "FAILS", "undefined": "UNDEFINED"}[self.verdict]
        half = "" if math.isnan(self.upper) else \
            f"the top {math.ceil(len(self.layers) / 2)} = {self.upper:.3f}, "
        lines = [f"sanity check of {self.method!r}: {word} ({self.measure} after randomising {half}all "
                 f"{len(self.layers)} layers = {self.final:.3f}, threshold {self.threshold})"]
        for name, sims in (self.similarity or self.independent).items():
            lines.append(f"  {name:<24} " + "  ".join(f"{k}={v:.3f}" for k, v in sims.items()))
        if self.random_logit:
            lines.append("  random logit           " + "  ".join(f"{k}={v:.3f}" for k, v in self.random_logit.items()))
        if self.reason:
            lines.append(f"  why: {self.reason}")
        return "\n".join(lines)


def randomizable_layers(module: nn.Module) -> list[str]:
    """Names of the submodules that own parameters, bottom (first registered) to top."""
    return [name for name, m in module.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))]


def _randomize(module: nn.Module, seed: int, device: torch.device) -> None:
    """Re-draw a layer's own parameters: its ``reset_parameters`` (the framework's initial
    distribution) under a forked, seeded RNG, else Gaussian with each tensor's own scale."""
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        for prm in module.parameters(recurse=False):
            std = float(prm.std()) if prm.numel() > 1 else 1.0
            prm.normal_(0.0, std if std > 0 and math.isfinite(std) else 1.0)


def similarities(a: torch.Tensor, b: torch.Tensor, measures: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-sample similarity of two batches of maps under each named measure."""
    if a.ndim == 4:
        a, b = a.sum(1), b.sum(1)
    return {m: MEASURES[m](a, b) for m in measures}


def _measures(measures: Sequence[str] | None, measure: str, image: bool) -> list[str]:
    chosen = list(measures) if measures is not None else [
        m for m in MEASURES if image or m not in _IMAGE_ONLY]
    if measure not in chosen:
        chosen.insert(0, measure)
    for m in chosen:
        if m not in MEASURES:
            raise OptionError(f"unknown similarity {m!r}; choose from {', '.join(MEASURES)}")
        if m in _IMAGE_ONLY and not image:
            raise OptionError(f"similarity {m!r} compares images; these inputs are not (N, C, H, W)")
    return chosen


def _order(module: nn.Module, layers: Sequence[str] | None) -> list[str]:
    allowed = randomizable_layers(module)
    if layers is None:
        return allowed[::-1]
    missing = [name for name in layers if name not in allowed]
    if missing:
        raise LayerNotFoundError(f"cannot randomise {missing}: layers with parameters are {allowed}")
    return [name for name in allowed[::-1] if name in set(layers)]


def sanity_check(
    model: Any,
    x: Any,
    *,
    method: str = "saliency",
    target: TargetSpec = "predicted",
    mode: Literal["cascading", "independent", "both"] = "cascading",
    layers: Sequence[str] | None = None,
    measures: Sequence[str] | None = None,
    measure: str = "spearman_abs",
    threshold: float = 0.5,
    random_logit: bool = True,
    seed: int = 0,
    explain_options: Mapping[str, Any] | None = None,
    explain_fn: ModelExplainFn | None = None,
    **options: Any,
) -> SanityResult:
    """Model-parameter randomisation test of ``method`` on the inputs ``x`` (Adebayo et al.).

    Parameters
    ----------
    method : str
        A registered method; ``options`` (or ``explain_options``) are its options, as for
        :func:`unveil.explain`.
    mode : str
        ``"cascading"`` (default), ``"independent"`` or ``"both"``.
    layers : list of str, optional
        Layers to randomise (default: every submodule owning parameters); always top down.
    measures : list of str, optional
        Among ``"spearman_abs"``, ``"spearman"``, ``"ssim"``, ``"hog"`` (the last two for
        images); default all that apply.
    measure, threshold
        The verdict: pass when ``measure`` is below ``threshold`` (default 0.5: less than half
        the rank agreement left) after randomising the upper half of the layers and after
        randomising all of them (see :class:`SanityResult`).
    seed : int
        Seeds the re-initialisation (layer ``i`` uses ``seed + i``) and the random class.
    explain_fn : callable, optional
        ``explain_fn(module, x, targets) -> values`` explains instead of ``method`` (for a
        method that is not registered); it is called with the original and each randomised copy.

    The user's model is never modified: a deep copy is randomised.
    """
    m = as_model(model)
    if m.module is None:
        raise ModelError("the sanity check randomises a torch.nn.Module's weights; this model is "
                         f"a {type(m.obj).__name__}")
    if mode not in ("cascading", "independent", "both"):
        raise OptionError(f"mode must be 'cascading', 'independent' or 'both', got {mode!r}")
    opts = {**options, **dict(explain_options or {})}
    xt = m.prepare(x)
    with torch.inference_mode(), m.guard():
        out = _forward_all(m, xt)
    targets = m.resolve_targets(target, out)
    v0 = _explainer(m, method, opts, explain_fn)(xt, targets)
    chosen = _measures(measures, measure, xt.ndim == 4 and xt.is_floating_point())
    order = _order(m.module, layers)
    if not order:
        raise ModelError("the model has no layer with parameters to randomise")
    runs: dict[str, list[torch.Tensor]] = {}
    if mode in ("cascading", "both"):
        runs["cascading"] = _randomised_maps(m, order, seed, method, opts, explain_fn, xt, targets, True)
    if mode in ("independent", "both"):
        runs["independent"] = _randomised_maps(m, order, seed, method, opts, explain_fn, xt, targets, False)
    if random_logit and out.ndim == 2 and out.shape[1] > 1 and targets is not None:
        other = _explainer(m, method, opts, explain_fn)(xt, _other_classes(targets, out.shape[1], seed))
        runs["random_logit"] = [other]
    sims = _compare(v0, runs, chosen)  # one batched comparison of every map with the original
    res = SanityResult(passed=False, threshold=threshold, measure=measure, final=math.nan,
                       method=method, mode=mode, layers=order)
    for kind in ("cascading", "independent"):
        if kind in sims:
            table = {name: {k: nanmean(v) for k, v in per.items()} for name, per in zip(order, sims[kind])}
            if kind == "cascading":
                res.similarity = table
            else:
                res.independent = table
            if kind == "cascading" or mode == "independent":
                res.per_sample = {name: {k: v.cpu().numpy() for k, v in per.items()}
                                  for name, per in zip(order, sims[kind])}
    res.final = res.similarity[order[-1]][measure] if res.similarity else \
        nanmean(np.array([t[measure] for t in res.independent.values()]))
    if "random_logit" in sims:
        res.random_logit = {k: nanmean(v) for k, v in sims["random_logit"][0].items()}
    if res.similarity:
        res.upper = res.similarity[order[math.ceil(len(order) / 2) - 1]][measure]
    res.passed = bool(res.final < threshold and not res.upper >= threshold)  # NaN upper: no test
    res.verdict, res.reason = _verdict(res, int(degenerate_rows(v0.detach().cpu()).sum()), v0.shape[0])
    res.passed = res.verdict == "passed"
    return res


def _verdict(res: SanityResult, constant: int, n: int) -> tuple[Any, str | None]:
    """``passed`` / ``failed`` / ``undefined`` with the reason in words."""
    if constant == n:
        return "undefined", (
            f"the maps of the original model are constant (e.g. all zero) for all {n} inputs, so "
            "there is nothing to compare; the method gives no information here (for a CAM, "
            "try another layer=)")
    if math.isnan(res.final):
        return "undefined", (
            f"the {res.measure} similarity could not be measured: after randomising the layers "
            "the maps are constant for every input")
    if res.passed:
        return "passed", None
    where = (f"{res.final:.2f} after randomising all {len(res.layers)} layers" if
             res.final >= res.threshold else
             f"{res.upper:.2f} after randomising the top {math.ceil(len(res.layers) / 2)}")
    return "failed", (f"the maps hardly change when the model's weights are random: {res.measure} "
                      f"similarity {where}, not below {res.threshold}")


def _explainer(m: Model, method: str, opts: dict[str, Any], fn: ModelExplainFn | None) -> Reexplainer:
    if fn is None:
        return Reexplainer(m, method, opts)
    module = m.module
    return Reexplainer(m, method, explain_fn=lambda x, t: fn(module, x, t))


def _randomised_maps(m: Model, order: list[str], seed: int, method: str, opts: dict[str, Any],
                     fn: ModelExplainFn | None, x: torch.Tensor, targets: torch.Tensor | None,
                     cascading: bool) -> list[torch.Tensor]:
    """The maps after randomising each layer of a copy: cumulatively (``cascading``) or that
    layer alone (its weights restored afterwards)."""
    assert m.module is not None
    twin = copy_module(m.module)
    explain = _explainer(Model(twin, output=m.output), method, opts, fn)
    maps = []
    for i, name in enumerate(order):
        layer = twin.get_submodule(name)
        saved = None if cascading else copy.deepcopy(layer.state_dict())
        _randomize(layer, seed + i, m.device)
        maps.append(explain(x, targets))
        if saved is not None:
            layer.load_state_dict(saved)
    return maps


def _compare(v0: torch.Tensor, runs: dict[str, list[torch.Tensor]], chosen: list[str],
             ) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Similarity of every map in ``runs`` with ``v0``, computed in one batch, split back."""
    flat = [v for maps in runs.values() for v in maps]
    if not flat:
        return {}
    n = v0.shape[0]
    sims = similarities(v0.repeat(len(flat), *([1] * (v0.ndim - 1))), torch.cat(flat), chosen)
    out: dict[str, list[dict[str, torch.Tensor]]] = {}
    k = 0
    for kind, maps in runs.items():
        out[kind] = [{m: s[(k + j) * n:(k + j + 1) * n] for m, s in sims.items()} for j in range(len(maps))]
        k += len(maps)
    return out


def _other_classes(targets: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """A seeded random class per row, never the row's own."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, k, targets.shape, generator=g).to(targets.device)
    return (targets + shift) % k


def random_logit(
    model: Any, exp: Explanation, *, measure: str = "spearman_abs", seed: int = 0,
    explain_fn: ExplainFn | None = None, explain_options: Mapping[str, Any] | None = None,
) -> MetricResult:
    """Random-logit test (Sixt et al., 2020): similarity (``measure``) between the explanation
    of the explained class and the explanation of a random other class, re-explained the same
    way. Lower is better: a map that ignores the class cannot explain a class decision."""
    p = prepare(model, exp)
    with torch.inference_mode(), p.model.guard():
        k = p.model.forward(p.x[:1]).shape[-1] if p.targets is not None else 1
    if p.targets is None or k < 2:
        raise ModelError("the random-logit test needs a model with several class scores")
    if measure not in MEASURES:
        raise OptionError(f"unknown similarity {measure!r}; choose from {', '.join(MEASURES)}")
    other = Reexplainer.of(p.model, exp, explain_fn=explain_fn, explain_options=explain_options)(
        p.x, _other_classes(p.targets, k, seed))
    sim = similarities(p.values, other, [measure])[measure]
    return MetricResult("random_logit", nanmean(sim), sim.cpu().numpy(), False,
                        params={"measure": measure, "seed": seed})


def sanity_metric(
    model: Any, exp: Explanation, *, max_samples: int | None = 16,
    mode: Literal["cascading", "independent", "both"] = "cascading",
    layers: Sequence[str] | None = None, measures: Sequence[str] | None = None,
    measure: str = "spearman_abs", threshold: float = 0.5, random_logit: bool = True, seed: int = 0,
    explain_options: Mapping[str, Any] | None = None,
) -> MetricResult:
    """:func:`sanity_check` of ``exp``'s method, with its stored options, on (up to
    ``max_samples`` of) its inputs and targets, as a :class:`MetricResult`: ``value`` is the
    verdict's similarity after full randomisation (lower is better), ``details`` the result."""
    sub = exp if max_samples is None or len(exp) <= max_samples else exp[:max_samples]
    target: Any = "predicted" if sub.targets is None else torch.as_tensor(sub.targets)
    opts = {**stored_options(sub), **dict(explain_options or {})}
    res = sanity_check(model, sub.inputs, method=sub.method, target=target, mode=mode, layers=layers,
                       measures=measures, measure=measure, threshold=threshold,
                       random_logit=random_logit, seed=seed, explain_options=opts)
    last = res.per_sample[res.layers[-1]][res.measure] if res.mode != "independent" else \
        np.nanmean(np.stack([v[res.measure] for v in res.per_sample.values()]), axis=0)
    return MetricResult("sanity", res.final, np.asarray(last), False, details=res.to_dict(),
                        params={"threshold": res.threshold, "measure": res.measure, "mode": res.mode,
                                "passed": res.passed, "upper": res.upper,
                                "verdict": res.verdict, "reason": res.reason})
