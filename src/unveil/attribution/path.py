"""Path methods: Integrated Gradients (Sundararajan et al., 2017)."""

from __future__ import annotations

import warnings
from typing import Any, Literal, Union

import numpy as np
import torch

from ..core.baselines import BaselineSpec
from ..core.batching import BatchSize, run_chunked
from ..core.options import Option
from ..core.registry import register
from ..errors import OptionError
from ._base import Attributor, Call, Partial
from ._layers import NeuronSpec, Space
from ._options import BASELINE, SPACE
from ._refs import Refs, make_refs

__all__ = ["IntegratedGradients", "quadrature"]

Rule = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
Steps = Union[int, Literal["auto"]]
AUTO_START = 16


def quadrature(n_steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) of a quadrature rule."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise OptionError(f"n_steps must be an int or 'auto', got {n_steps!r}")
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


@register(
    "integrated_gradients", family="gradient", needs_gradients=True,
    display_name="Integrated Gradients", signed=True, takes_seed=True, common=("background",),
    preferred_for={"image": 0, "tabular": 0, "text": 0, "sequence": 0},
    options=(
        Option("n_steps", Steps, 50, "points on the path from the baseline to the input; 'auto' "
               "doubles them per row from 16 until |delta| <= tol * |f(x) - f(b)|", low=1),
        Option("rule", Rule, "gausslegendre", "quadrature rule along the path"),
        Option("tol", float, 0.01, "completeness tolerance of n_steps='auto', relative to "
               "|f(x) - f(b)|", low=0),
        Option("max_steps", int, 512, f"step limit of n_steps='auto', at least {AUTO_START}",
               low=1),
        BASELINE, *SPACE,
    ),
)
class IntegratedGradients(Attributor):
    """Integrated Gradients: ``(x - b) * mean over the straight path of the gradient``.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017. Matches
    ``captum.attr.IntegratedGradients`` (and ``LayerIntegratedGradients`` with ``layer=``).

    Parameters
    ----------
    n_steps : int or "auto"
        Points on the path from the baseline to the input (default 50). ``"auto"`` starts at
        16 and doubles, per row, until ``|delta| <= tol * |f(x) - f(b)|`` or ``max_steps``;
        ``exp.extras["n_steps"]`` holds the steps each row used.
    rule : str
        Quadrature: ``"gausslegendre"`` (default), ``"riemann_left"``, ``"riemann_right"``,
        ``"riemann_middle"`` or ``"riemann_trapezoid"``.
    tol, max_steps : float, int
        Tolerance and step limit of ``n_steps="auto"`` (defaults 0.01 and 512).
    batch_size : int or "auto"
        Rows (sample x step) per forward/backward chunk.

    Call options: ``baseline=`` (default ``"zeros"``; a number, ``"blur"``, ``"mean"``,
    ``"uniform"`` with ``seed=``, or a tensor; token ids for text), or ``background=`` (M, ...)
    to average IG over M baselines (expected IG); ``layer=`` to attribute to a layer's output
    (baselines are still given as inputs and mapped through the model), ``neuron=`` to
    explain one unit. ``exp.delta`` is the completeness gap ``sum(values) - (f(x) - f(b))``
    per row (``f(b)`` averaged over the background); for ``layer=`` ``f(b)`` is the model on
    ``x`` with the layer's output set to its value at ``b``, the end of the integrated path.
    """

    def __init__(
        self,
        model: Any,
        *,
        n_steps: Steps = 50,
        rule: Rule = "gausslegendre",
        tol: float = 0.01,
        max_steps: int = 512,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if n_steps == "auto":
            quadrature(max_steps, rule)
            if not tol > 0 or max_steps < AUTO_START:
                raise OptionError(
                    f"n_steps='auto' needs tol > 0 and max_steps >= {AUTO_START}; got "
                    f"tol={tol}, max_steps={max_steps}"
                )
        else:
            quadrature(n_steps, rule)  # validate early
        self.n_steps = n_steps
        self.rule = rule
        self.tol = tol
        self.max_steps = max_steps

    def _attribute(
        self,
        call: Call,
        *,
        baseline: BaselineSpec = None,
        background: Any = None,
        layer: str | None = None,
        neuron: NeuronSpec = None,
        seed: int | None = None,
    ) -> Partial:
        space = Space.of_call(call, method=self.name, batch_size=self.batch_size, layer=layer,
                              neuron=neuron)
        res = self._attribute_space(space, baseline=baseline, background=background, seed=seed)
        res.seed = seed
        return space.finish(res)

    def _attribute_space(
        self,
        space: Space,
        *,
        baseline: BaselineSpec = None,
        background: Any = None,
        seed: int | None = None,
    ) -> Partial:
        """IG at every point of ``space`` with its delta and baseline outputs."""
        refs = make_refs(space, baseline, background, seed=seed)
        f_ref = space.objective_at(refs.pair_row, refs.points[refs.pair_ref])
        fb = f_ref.view(-1, refs.per_row).mean(dim=1)
        gap = space.outputs() - fb
        rows = torch.arange(space.rows.shape[0], device=space.inputs.device)
        if self.n_steps != "auto":
            values = self._integrate(space, refs, rows, int(self.n_steps))
            used = None
        else:
            values, used = self._auto(space, refs, rows, gap)
        delta = values.flatten(1).sum(1) - gap
        out = Partial(values=values, baseline_outputs=fb, delta=delta,
                      params={"baseline": refs.label})
        if used is not None:
            out.add(extras={"n_steps": used.cpu().numpy()})
        return out

    def _auto(
        self, space: Space, refs: Refs, rows: torch.Tensor, gap: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Double the steps for the rows whose completeness gap is above the tolerance."""
        values = torch.zeros_like(space.points)
        used = torch.zeros(rows.shape[0], dtype=torch.long)
        active, steps = rows, AUTO_START
        while active.numel():
            v = self._integrate(space, refs, active, steps)
            values[active] = v
            used[active.cpu()] = steps
            err = (v.flatten(1).sum(1) - gap[active]).abs()
            ok = err <= self.tol * gap[active].abs() + 1e-6 * (1 + space.outputs()[active].abs())
            active = active[~ok]
            if steps * 2 > self.max_steps:
                break
            steps *= 2
        if active.numel():
            warnings.warn(
                f"integrated_gradients: {active.numel()} row(s) still have a completeness gap "
                f"above tol={self.tol} at {steps} steps; raise max_steps or use a smoother model",
                UserWarning, stacklevel=4,
            )
        return values, used

    def _integrate(
        self, space: Space, refs: Refs, rows: torch.Tensor, n_steps: int
    ) -> torch.Tensor:
        """``(x - b) * sum_k w_k grad(b + a_k (x - b))`` for the given space rows (in order)."""
        pts = space.points
        a_np, w_np = quadrature(n_steps, self.rule)
        alphas = torch.as_tensor(a_np, dtype=pts.dtype, device=pts.device)
        weights = torch.as_tensor(w_np, dtype=pts.dtype, device=pts.device)
        m, s = refs.per_row, n_steps
        # pairs of the chosen rows: row i (position in `rows`) owns pairs i*m .. i*m+m-1
        pairs = (rows.view(-1, 1) * m + torch.arange(m, device=pts.device)).flatten()
        local = torch.arange(rows.shape[0], device=pts.device).repeat_interleave(m)
        out = torch.zeros((rows.shape[0], *pts.shape[1:]), dtype=pts.dtype, device=pts.device)
        shape1 = (-1,) + (1,) * (pts.ndim - 1)

        def run(a: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
            # flat index q -> pair q // s, step q % s: each pair's path is contiguous
            q = torch.arange(a, c, device=pts.device)
            p, k = pairs[q // s], q % s
            r, ref = refs.pair_row[p], refs.points[refs.pair_ref[p]]
            x_r = pts[r]
            _, g = space.gradient(r, ref + alphas[k].view(shape1) * (x_r - ref))
            return (x_r - ref) * g * (weights[k] / m).view(shape1), local[q // s]

        def consume(_a: int, _c: int, res: tuple[torch.Tensor, torch.Tensor]) -> None:
            out.index_add_(0, res[1], res[0])

        run_chunked(
            run, pairs.shape[0] * s, consume=consume, batch_size=self.batch_size,
            model=space.model, grad=True, key=space.key("gradient", pairs.shape[0] * s),
        )
        return out
