"""Path methods: Integrated Gradients (Sundararajan et al., 2017)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ..core.baselines import BaselineSpec, make_baseline
from ..core.batching import BatchSize, run_chunked
from ..core.registry import register
from ..errors import OptionError
from ._base import Attributor, Call

__all__ = ["IntegratedGradients", "quadrature"]

Rule = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(n_steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) of a quadrature rule."""
    if n_steps < 1 or (rule == "riemann_trapezoid" and n_steps < 2):
        raise OptionError(f"n_steps must be >= 1 (>= 2 for the trapezoid rule), got {n_steps}")
    k = np.arange(n_steps, dtype=np.float64)
    if rule == "gausslegendre":
        pts, w = np.polynomial.legendre.leggauss(n_steps)
        return (pts + 1) / 2, w / 2
    if rule == "riemann_left":
        return k / n_steps, np.full(n_steps, 1 / n_steps)
    if rule == "riemann_right":
        return (k + 1) / n_steps, np.full(n_steps, 1 / n_steps)
    if rule == "riemann_middle":
        return (k + 0.5) / n_steps, np.full(n_steps, 1 / n_steps)
    if rule == "riemann_trapezoid":
        w = np.full(n_steps, 1 / (n_steps - 1))
        w[0] /= 2
        w[-1] /= 2
        return k / (n_steps - 1), w
    raise OptionError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")


@register("integrated_gradients", family="gradient", needs_gradients=True)
class IntegratedGradients(Attributor):
    """Integrated Gradients: ``(x - b) * mean over the path of the gradient``.

    Parameters
    ----------
    n_steps : int
        Points on the straight path from the baseline to the input (default 50).
    rule : str
        Quadrature: ``"gausslegendre"`` (default), ``"riemann_left"``, ``"riemann_right"``,
        ``"riemann_middle"`` or ``"riemann_trapezoid"``.

    Call with ``baseline=`` (default ``"zeros"``; see :func:`unveil.core.baselines.make_baseline`).
    ``exp.delta`` holds the completeness gap ``sum(values) - (f(x) - f(b))`` per row.
    """

    def __init__(
        self,
        model: Any,
        *,
        n_steps: int = 50,
        rule: Rule = "gausslegendre",
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        quadrature(n_steps, rule)  # validate early
        self.n_steps = n_steps
        self.rule = rule

    def _attribute(
        self, call: Call, *, baseline: BaselineSpec = "zeros", seed: int | None = None
    ) -> dict[str, Any]:
        model, x, t = call.model, call.x, call.targets
        model.require_gradients(self.name)
        b = make_baseline(baseline, x, seed=seed)
        alphas_np, weights_np = quadrature(self.n_steps, self.rule)
        alphas = torch.as_tensor(alphas_np, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(weights_np, dtype=x.dtype, device=x.device)
        n, s = x.shape[0], self.n_steps
        diff = x - b
        total_grad = torch.zeros_like(x)
        shape1 = (-1,) + (1,) * (x.ndim - 1)

        def run(a: int, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            # flat index r -> sample r // s, step r % s: each sample's path is contiguous
            r = torch.arange(a, c, device=x.device)
            i, k = r // s, r % s
            pts = b[i] + alphas[k].view(shape1) * diff[i]
            scores, g = model.gradient(pts, None if t is None else t[i], method=self.name)
            return scores, g * weights[k].view(shape1), i

        def consume(_a: int, _c: int, res: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
            total_grad.index_add_(0, res[2], res[1])

        run_chunked(
            run, n * s, consume=consume, batch_size=self.batch_size, model=model, grad=True,
            key=("gradient", tuple(x.shape[1:])),
        )
        values = diff * total_grad
        with torch.inference_mode():
            fb = model.select(self.predict(b), t)
        delta = values.flatten(1).sum(1) - (call.outputs - fb)
        return {"values": values, "baseline_outputs": fb.clone(), "delta": delta.clone(), "seed": seed,
                "params": {"baseline": baseline if isinstance(baseline, (str, int, float)) else "tensor"}}
