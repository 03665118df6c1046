"""Faithfulness: does removing what the explanation calls important change the model's output?

- :func:`deletion` and :func:`insertion` (Petsiuk et al., 2018, "RISE", BMVC; pixel flipping,
  Bach et al., 2015): the target score as features are removed from the input (or inserted into a
  baseline) in the explanation's order; the area under that curve.
- :func:`faithfulness_correlation` (Bhatt et al., 2020, "Evaluating and Aggregating Feature-based
  Model Explanations", IJCAI): correlation between the attribution of random subsets and the drop
  of the output when they are removed.
- :func:`infidelity` (Yeh et al., 2019, "On the (In)fidelity and Sensitivity of Explanations",
  NeurIPS): expected squared error between the attribution's prediction of an output change and
  the change itself.
- :func:`comprehensiveness` and :func:`sufficiency` (DeYoung et al., 2020, "ERASER", ACL): output
  drop when the top features are removed, or when only they are kept.

Every perturbed input is built per chunk from precomputed ranks and scored through
:func:`unveil.core.batching.run_chunked`; random subsets are a pure function of ``seed`` and the
draw's index, so results do not depend on the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from ..core.baselines import BaselineSpec, make_baseline
from ..core.batching import BatchSize
from ..core.explanation import Explanation
from ..errors import OptionError
from ._common import MetricResult, Output, Prepared, nanmean, prepare, score_rows
from ._features import Features, FeatureSpec, feature_count_steps
from ._features import features as feature_set

__all__ = [
    "comprehensiveness",
    "deletion",
    "faithfulness_correlation",
    "infidelity",
    "insertion",
    "perturbation_curves",
    "sufficiency",
]

Order = Literal["morf", "lerf", "random"]


def _baseline(p: Prepared, spec: BaselineSpec, seed: int | None) -> torch.Tensor:
    b = make_baseline(spec, p.x, seed=seed)
    return b.reshape(p.n, -1)


def perturbation_curves(
    p: Prepared,
    feats: Features,
    counts: torch.Tensor,
    *,
    mode: Literal["deletion", "insertion"],
    baseline: torch.Tensor,
    order: Order = "morf",
    output: Output = "probs",
    seed: int | None = 0,
    batch_size: BatchSize = "auto",
) -> torch.Tensor:
    """Target scores (N, K) with the first ``counts[k]`` features (in ``order``) replaced by the
    baseline (``mode="deletion"``) or taken from the input into the baseline (``"insertion"``)."""
    n, k = p.n, int(counts.shape[0])
    x = p.x.reshape(n, -1)
    er = feats.element_ranks(feats.ranks(order, seed))
    cnt = counts.to(p.x.device)
    # a point whose newly moved elements already equal the baseline repeats the previous input:
    # score only the distinct inputs and carry the scores forward (exact, and often many fewer)
    moved = torch.where(x != baseline, er, torch.full_like(er, torch.iinfo(torch.int64).max))
    n_moved = torch.searchsorted(moved.sort(1).values, cnt.view(1, -1).expand(n, -1).contiguous())
    distinct = torch.ones(n, k, dtype=torch.bool, device=x.device)
    distinct[:, 1:] = n_moved[:, 1:] != n_moved[:, :-1]
    rows_i, rows_j = distinct.nonzero(as_tuple=True)

    def build(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = rows_i[a:b], rows_j[a:b]
        inside = er[i] < cnt[j].view(-1, 1)
        xs = torch.where(inside, baseline[i], x[i]) if mode == "deletion" \
            else torch.where(inside, x[i], baseline[i])
        return xs.view(b - a, *p.x.shape[1:]), i

    out = score_rows(p.model, build, int(rows_i.shape[0]), p.targets, output=output,
                     batch_size=batch_size, key=("curve", tuple(p.x.shape[1:])))
    source = torch.where(distinct, torch.arange(k, device=x.device).expand(n, k), -1).cummax(1).values
    full = torch.empty(n, k, dtype=out.dtype, device=out.device)
    full[rows_i, rows_j] = out
    return full.gather(1, source)


def _curve_metric(
    name: str, mode: Literal["deletion", "insertion"], model: Any, exp: Explanation,
    baseline: BaselineSpec, order: Order, n_steps: int | None, step: int | None,
    feature_spec: FeatureSpec, output: Output, seed: int | None, batch_size: BatchSize,
) -> MetricResult:
    p = prepare(model, exp)
    feats = feature_set(p, feature_spec)
    counts = feature_count_steps(feats.n_features, n_steps, step)
    b = _baseline(p, baseline, seed)
    curves = perturbation_curves(p, feats, counts, mode=mode, baseline=b, order=order,
                                 output=output, seed=seed, batch_size=batch_size)
    frac = counts.double() / feats.n_features
    auc = torch.trapezoid(curves.double(), frac.to(curves.device).view(1, -1), dim=1)
    better = (mode == "insertion") == (order == "morf") if order != "random" else None
    return MetricResult(
        name=name, value=nanmean(auc), per_sample=auc.cpu().numpy(), higher_is_better=better,
        details={"fractions": frac.numpy(), "curve": curves.mean(0).cpu().numpy(),
                 "curves": curves.cpu().numpy(), "n_features": feats.n_features},
        params={"baseline": baseline if isinstance(baseline, (str, int, float)) else "tensor",
                "order": order, "n_steps": len(counts) - 1, "output": output, "seed": seed},
    )


def deletion(
    model: Any, exp: Explanation, *, baseline: BaselineSpec = "zeros", order: Order = "morf",
    n_steps: int | None = 50, step: int | None = None, features: FeatureSpec = "auto",
    output: Output = "probs", seed: int | None = 0, batch_size: BatchSize = "auto",
) -> MetricResult:
    """Deletion curve and its area (Petsiuk et al., 2018): features are replaced by the
    baseline, most relevant first (``order="morf"``; ``"lerf"`` least relevant first,
    ``"random"`` a seeded random order for reference).

    Parameters
    ----------
    baseline : str, number or tensor
        What removed features become: ``"zeros"`` (default), ``"blur"``, ``"mean"``, a number or
        a tensor broadcastable to the inputs.
    n_steps, step
        Points of the curve: ``n_steps`` equal steps (default 50), or ``step`` features per step
        (``step=1`` is pixel flipping, Bach et al., 2015).
    features
        ``"auto"`` (the explanation's groups, else pixels for images, else elements),
        ``"pixels"``, ``"elements"`` or a :class:`~unveil.FeatureGroups`.
    output
        Score the target's ``"probs"`` (softmax, default) or ``"logits"``.

    Returns
    -------
    MetricResult
        ``per_sample`` the area under the curve over the fraction of features removed, in
        [0, 1] (lower is better for ``"morf"``); ``details`` holds ``fractions`` (K+1,),
        ``curves`` (N, K+1) starting at the unperturbed input, and their mean ``curve``.
    """
    return _curve_metric("deletion", "deletion", model, exp, baseline, order, n_steps, step,
                         features, output, seed, batch_size)


def insertion(
    model: Any, exp: Explanation, *, baseline: BaselineSpec | None = None, order: Order = "morf",
    n_steps: int | None = 50, step: int | None = None, features: FeatureSpec = "auto",
    output: Output = "probs", seed: int | None = 0, batch_size: BatchSize = "auto",
) -> MetricResult:
    """Insertion curve and its area (Petsiuk et al., 2018): starting from the baseline
    (``"blur"`` for images, ``"zeros"`` otherwise, by default), features of the input are put
    back, most relevant first. Higher is better for ``"morf"``. Options as :func:`deletion`."""
    if baseline is None:
        baseline = "blur" if np.asarray(exp.inputs).ndim == 4 and np.issubdtype(
            np.asarray(exp.inputs).dtype, np.floating) else "zeros"
    return _curve_metric("insertion", "insertion", model, exp, baseline, order, n_steps, step,
                         features, output, seed, batch_size)


def _subset_size(size: int | float, n_features: int) -> int:
    s = int(round(size * n_features)) if isinstance(size, float) and size < 1 else int(size)
    if s < 1 or s > n_features:
        raise OptionError(f"subset_size must select 1..{n_features} features, got {size!r}")
    return s


def _subsets(seed: int | None, run: int, n: int, n_features: int, size: int,
             device: torch.device) -> torch.Tensor:
    """(n, F) bool: draw ``run``'s random subsets of ``size`` features, one per sample
    (a pure function of the seed and the draw index)."""
    g = torch.Generator().manual_seed((0 if seed is None else int(seed)) * 1_000_003 + run)
    idx = torch.rand(n, n_features, generator=g).argsort(1)[:, :size]
    return torch.zeros(n, n_features, dtype=torch.bool).scatter_(1, idx, True).to(device)


def _subset_drops(
    p: Prepared, feats: Features, *, n_runs: int, size: int, baseline: torch.Tensor,
    output: Output, seed: int | None, batch_size: BatchSize,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output drops ``f(x) - f(x with a random subset at the baseline)`` (N, R) and the summed
    attributions of the subsets (N, R)."""
    n, nf = p.n, feats.n_features
    x = p.x.reshape(n, -1)
    dev = p.x.device

    def build(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(a, b, device=dev)
        parts = []
        for run in range(a // n, (b - 1) // n + 1):
            chosen = feats.element_mask(_subsets(seed, run, n, nf, size, dev))
            lo, hi = max(a, run * n) - run * n, min(b, (run + 1) * n) - run * n
            parts.append(torch.where(chosen[lo:hi], baseline[lo:hi], x[lo:hi]))
        return torch.cat(parts).view(b - a, *p.x.shape[1:]), rows % n

    key = ("subset", tuple(p.x.shape[1:]))
    f0 = score_rows(p.model, lambda a, b: (p.x[a:b], torch.arange(a, b, device=dev)), n,
                    p.targets, output=output, batch_size=batch_size, key=key)
    fs = score_rows(p.model, build, n * n_runs, p.targets, output=output, batch_size=batch_size,
                    key=key).view(n_runs, n).T
    sums = torch.stack([(feats.scores * _subsets(seed, r, n, nf, size, dev)).sum(1)
                        for r in range(n_runs)], 1)
    return (f0.view(-1, 1) - fs).double(), sums.double()


def faithfulness_correlation(
    model: Any, exp: Explanation, *, n_runs: int = 100, subset_size: int | float = 0.1,
    baseline: BaselineSpec = "zeros", features: FeatureSpec = "auto", output: Output = "logits",
    seed: int | None = 0, batch_size: BatchSize = "auto",
) -> MetricResult:
    """Faithfulness correlation (Bhatt et al., 2020): Pearson correlation, over ``n_runs``
    random subsets of ``subset_size`` features (a count, or a fraction when below 1), between
    the subset's summed attribution and the output drop when the subset is set to the baseline.
    Higher is better; NaN for a sample whose drops or sums do not vary."""
    from .similarity import pearson

    if n_runs < 2:
        raise OptionError(f"n_runs must be at least 2 to correlate, got {n_runs}")
    p = prepare(model, exp)
    feats = feature_set(p, features)
    size = _subset_size(subset_size, feats.n_features)
    drops, sums = _subset_drops(p, feats, n_runs=n_runs, size=size, baseline=_baseline(p, baseline, seed),
                                output=output, seed=seed, batch_size=batch_size)
    r = pearson(sums, drops)
    return MetricResult("faithfulness_correlation", nanmean(r), r.cpu().numpy(), True,
                        params={"n_runs": n_runs, "subset_size": size, "output": output, "seed": seed})


def infidelity(
    model: Any, exp: Explanation, *, perturbation: Literal["subset", "gaussian"] = "subset",
    n_samples: int = 64, subset_size: int | float = 0.1, noise_scale: float = 0.1,
    baseline: BaselineSpec = "zeros", normalize: bool = False, output: Output = "logits",
    seed: int | None = 0, batch_size: BatchSize = "auto",
) -> MetricResult:
    """Infidelity (Yeh et al., 2019): ``E[(I . phi - (f(x) - f(x - I)))^2]`` per sample.

    ``perturbation="subset"`` (default) sets random subsets of features to the baseline and
    compares the output drop with the subset's summed attribution — Captum's
    ``multiply_by_inputs`` convention, right for attributions that include the input (IG,
    Input x Gradient, Shapley values, occlusion). ``"gaussian"`` subtracts noise
    ``I ~ N(0, noise_scale^2)`` from every element and uses ``I . phi`` — right for local,
    gradient-like maps. ``normalize`` rescales the attributions by the optimal factor
    ``beta = E[I.phi * drop] / E[(I.phi)^2]`` first. Lower is better; 0 is exact.
    """
    if n_samples < 1:
        raise OptionError(f"n_samples must be positive, got {n_samples}")
    p = prepare(model, exp)
    if perturbation == "subset":
        feats = feature_set(p, "elements")
        size = _subset_size(subset_size, feats.n_features)
        drops, pred = _subset_drops(p, feats, n_runs=n_samples, size=size,
                                    baseline=_baseline(p, baseline, seed), output=output,
                                    seed=seed, batch_size=batch_size)
    elif perturbation == "gaussian":
        drops, pred = _gaussian_drops(p, n_samples, noise_scale, output, seed, batch_size)
    else:
        raise OptionError(f"perturbation must be 'subset' or 'gaussian', got {perturbation!r}")
    if normalize:
        beta = (pred * drops).mean(1, keepdim=True) / (pred * pred).mean(1, keepdim=True).clamp(min=1e-300)
        pred = pred * beta
    inf = ((pred - drops) ** 2).mean(1)
    return MetricResult("infidelity", nanmean(inf), inf.cpu().numpy(), False,
                        params={"perturbation": perturbation, "n_samples": n_samples,
                                "normalize": normalize, "output": output, "seed": seed})


def _noise(seed: int | None, run: int, shape: Sequence[int], scale: float,
           device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed((0 if seed is None else int(seed)) * 1_000_003 + run)
    return (torch.randn(tuple(shape), generator=g, dtype=torch.float64) * scale).float().to(device)


def _gaussian_drops(p: Prepared, n_runs: int, scale: float, output: Output, seed: int | None,
                    batch_size: BatchSize) -> tuple[torch.Tensor, torch.Tensor]:
    n, dev = p.n, p.x.device

    def build(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for run in range(a // n, (b - 1) // n + 1):
            lo, hi = max(a, run * n) - run * n, min(b, (run + 1) * n) - run * n
            parts.append(p.x[lo:hi] - _noise(seed, run, p.x.shape, scale, dev)[lo:hi])
        return torch.cat(parts), torch.arange(a, b, device=dev) % n

    key = ("gauss", tuple(p.x.shape[1:]))
    f0 = score_rows(p.model, lambda a, b: (p.x[a:b], torch.arange(a, b, device=dev)), n, p.targets,
                    output=output, batch_size=batch_size, key=key)
    fs = score_rows(p.model, build, n * n_runs, p.targets, output=output, batch_size=batch_size,
                    key=key).view(n_runs, n).T
    pred = torch.stack([(_noise(seed, r, p.x.shape, scale, dev) * p.values).flatten(1).sum(1)
                        for r in range(n_runs)], 1)
    return (f0.view(-1, 1) - fs).double(), pred.double()


def _eraser(name: str, mode: Literal["deletion", "insertion"], model: Any, exp: Explanation,
            bins: Sequence[float], baseline: BaselineSpec, feature_spec: FeatureSpec, output: Output,
            batch_size: BatchSize) -> MetricResult:
    if not bins or any(not 0 < b <= 1 for b in bins):
        raise OptionError(f"bins must be fractions in (0, 1], got {bins!r}")
    p = prepare(model, exp)
    feats = feature_set(p, feature_spec)
    # the first point is the unperturbed input: nothing deleted, or everything inserted
    first = 0 if mode == "deletion" else feats.n_features
    counts = torch.tensor([first] + [max(1, math.ceil(b * feats.n_features)) for b in bins])
    curves = perturbation_curves(p, feats, counts, mode=mode, baseline=_baseline(p, baseline, 0),
                                 output=output, batch_size=batch_size)
    drops = curves[:, :1] - curves[:, 1:]
    score = drops.mean(1)
    return MetricResult(name, nanmean(score), score.cpu().numpy(), name == "comprehensiveness",
                        details={"bins": list(bins), "drops": drops.mean(0).cpu().numpy()},
                        params={"bins": list(bins), "output": output})


_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)


def comprehensiveness(
    model: Any, exp: Explanation, *, bins: Sequence[float] = _BINS, baseline: BaselineSpec = 0,
    features: FeatureSpec = "auto", output: Output = "probs", batch_size: BatchSize = "auto",
) -> MetricResult:
    """Comprehensiveness (DeYoung et al., 2020): the drop of the target probability when the
    top ``bins`` fractions of features (tokens for text) are removed — replaced by ``baseline``,
    e.g. the pad or mask token id — averaged over the bins (AOPC). Higher is better."""
    return _eraser("comprehensiveness", "deletion", model, exp, bins, baseline, features, output,
                   batch_size)


def sufficiency(
    model: Any, exp: Explanation, *, bins: Sequence[float] = _BINS, baseline: BaselineSpec = 0,
    features: FeatureSpec = "auto", output: Output = "probs", batch_size: BatchSize = "auto",
) -> MetricResult:
    """Sufficiency (DeYoung et al., 2020): the drop of the target probability when only the top
    ``bins`` fractions of features are kept (the rest set to ``baseline``), averaged over the
    bins. Lower is better (negative: the kept features alone are even more convincing)."""
    return _eraser("sufficiency", "insertion", model, exp, bins, baseline, features, output,
                   batch_size)
