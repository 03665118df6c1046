"""Robustness: does the explanation stay put when the input barely moves?

- :func:`max_sensitivity` and :func:`avg_sensitivity` (Yeh et al., 2019, "On the (In)fidelity and
  Sensitivity of Explanations", NeurIPS): the largest (mean) relative change
  ``||phi(x + d) - phi(x)|| / ||phi(x)||`` over perturbations ``d`` drawn uniformly from the
  L-infinity ball of radius ``radius``.
- :func:`local_lipschitz` (Alvarez-Melis & Jaakkola, 2018, "On the Robustness of Interpretability
  Methods", ICML WHI): the largest ``||phi(x') - phi(x)|| / ||x' - x||`` over Gaussian
  neighbours ``x'``.

The cost is re-explaining every perturbed copy. All copies of a chunk of draws go to the method in
one call (so the method batches them through the core), the draws are a pure function of
``seed`` and the draw's index, and the method is rebuilt from the registry with the options
stored in the explanation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from ..core.batching import run_chunked
from ..core.explanation import Explanation
from ..errors import InputError, OptionError
from ._common import ExplainFn, MetricResult, Prepared, Reexplainer, nanmean, prepare

__all__ = ["avg_sensitivity", "local_lipschitz", "max_sensitivity", "perturbed_figures"]

_MAX_ROWS_BYTES = 1 << 28  # inputs of one re-explanation call, at most (~256 MB)


def _draw(seed: int | None, run: int, shape: tuple[int, ...], kind: str, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed((0 if seed is None else int(seed)) * 1_000_003 + 7919 * run + 1)
    if kind == "uniform":
        return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def perturbed_figures(
    p: Prepared,
    reexplain: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    figure: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    n_samples: int,
    kind: Literal["uniform", "gaussian"],
    scale: float,
    seed: int | None,
) -> torch.Tensor:
    """(N, n_samples): ``figure(dx, dphi)`` per sample and draw, where ``dx = x' - x`` and
    ``dphi = phi(x') - phi(x)`` are flattened (rows, D) for the perturbed copies ``x'``."""
    n, shape = p.n, tuple(p.x.shape)
    if not p.x.is_floating_point():
        raise InputError("robustness metrics add noise to the inputs, which are integers (token ids); "
                         "they apply to real-valued inputs only")
    if n_samples < 1:
        raise OptionError(f"n_samples must be positive, got {n_samples}")
    row_bytes = max(1, p.x[0].numel() * p.x.element_size())
    draws_per_call = max(1, min(n_samples, _MAX_ROWS_BYTES // (row_bytes * n)))
    base = p.values.reshape(n, -1)

    def run(a: int, b: int) -> torch.Tensor:
        dx = torch.cat([_draw(seed, r, shape, kind, scale) for r in range(a, b)]).to(p.x)
        rows = torch.arange(a * n, b * n, device=p.x.device) % n
        phi = reexplain(p.x[rows] + dx, None if p.targets is None else p.targets[rows])
        return figure(dx.reshape(len(rows), -1).double(), (phi.reshape(len(rows), -1) - base[rows]).double())

    out = run_chunked(run, n_samples, batch_size=draws_per_call)
    assert out is not None
    return out.view(n_samples, n).T


def _sensitivity(name: str, reduce: str, model: Any, exp: Explanation, n_samples: int, radius: float,
                 normalize: bool, explain_fn: ExplainFn | None, explain_options: Mapping[str, Any] | None,
                 seed: int | None) -> MetricResult:
    p = prepare(model, exp)
    reexp = Reexplainer.of(p.model, exp, explain_fn=explain_fn, explain_options=explain_options)
    norm0 = p.values.reshape(p.n, -1).double().norm(dim=1)
    scale = norm0.clamp(min=1e-12) if normalize else torch.ones_like(norm0)

    def figure(_dx: torch.Tensor, dphi: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.linalg.vector_norm(dphi, dim=1)
        return out

    sens = perturbed_figures(p, reexp, figure, n_samples=n_samples, kind="uniform", scale=radius,
                             seed=seed)
    sens = sens / scale.view(-1, 1)
    per = sens.max(1).values if reduce == "max" else sens.mean(1)
    return MetricResult(name, nanmean(per), per.cpu().numpy(), False,
                        params={"n_samples": n_samples, "radius": radius, "normalize": normalize,
                                "seed": seed, "method": reexp.method})


def max_sensitivity(
    model: Any, exp: Explanation, *, n_samples: int = 50, radius: float = 0.2, normalize: bool = True,
    explain_fn: ExplainFn | None = None, explain_options: Mapping[str, Any] | None = None,
    seed: int | None = 0,
) -> MetricResult:
    """Max-sensitivity (Yeh et al., 2019): ``max_d ||phi(x + d) - phi(x)|| / ||phi(x)||`` over
    ``n_samples`` draws ``d ~ U[-radius, radius]^D`` (the Frobenius norm; ``normalize=False``
    drops the division, as in the paper). Lower is better; 0 for an explanation that ignores
    small input changes.

    The perturbed inputs are re-explained by the explanation's registered method with its
    stored options (``explain_options`` override them, e.g. a baseline tensor), or by
    ``explain_fn(x, targets) -> values`` when given; the target stays the explained class.
    """
    return _sensitivity("max_sensitivity", "max", model, exp, n_samples, radius, normalize,
                        explain_fn, explain_options, seed)


def avg_sensitivity(
    model: Any, exp: Explanation, *, n_samples: int = 50, radius: float = 0.2, normalize: bool = True,
    explain_fn: ExplainFn | None = None, explain_options: Mapping[str, Any] | None = None,
    seed: int | None = 0,
) -> MetricResult:
    """Average sensitivity (Yeh et al., 2019): the mean over the draws of the relative change
    that :func:`max_sensitivity` maximises. Lower is better."""
    return _sensitivity("avg_sensitivity", "mean", model, exp, n_samples, radius, normalize,
                        explain_fn, explain_options, seed)


def local_lipschitz(
    model: Any, exp: Explanation, *, n_samples: int = 50, noise_scale: float = 0.1,
    explain_fn: ExplainFn | None = None, explain_options: Mapping[str, Any] | None = None,
    seed: int | None = 0,
) -> MetricResult:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018):
    ``max_x' ||phi(x') - phi(x)||_2 / ||x' - x||_2`` over ``n_samples`` neighbours
    ``x' = x + N(0, noise_scale^2)``. Lower is better. Re-explains as :func:`max_sensitivity`."""
    p = prepare(model, exp)
    reexp = Reexplainer.of(p.model, exp, explain_fn=explain_fn, explain_options=explain_options)

    def figure(dx: torch.Tensor, dphi: torch.Tensor) -> torch.Tensor:
        num: torch.Tensor = torch.linalg.vector_norm(dphi, dim=1)
        den: torch.Tensor = torch.linalg.vector_norm(dx, dim=1)
        return num / den.clamp(min=1e-12)

    lip = perturbed_figures(p, reexp, figure, n_samples=n_samples, kind="gaussian",
                            scale=noise_scale, seed=seed)
    per = lip.max(1).values
    return MetricResult("local_lipschitz", nanmean(per), per.cpu().numpy(), False,
                        params={"n_samples": n_samples, "noise_scale": noise_scale, "seed": seed,
                                "method": reexp.method})
