"""GradientSHAP: expected gradients over a background set (Lundberg & Lee, 2017; Erion et al.).

For each explained row and each of ``n_samples`` draws: a background row ``b`` uniformly, a
point ``alpha ~ U(0, 1)`` on the segment, and optionally Gaussian noise ``e`` on the input;
the sample's value is ``(x + e - b) * grad f(b + alpha (x + e - b))`` and the attribution is
their mean. It approximates the SHAP values of a model that is linear between the input and
each background row, and in expectation satisfies completeness against ``E f(b)``. This is
``captum.attr.GradientShap`` (whose ``stdevs`` noise is absolute, default 0; here
``noise_level`` is relative to each row's range, default 0, and ``stdev=`` is absolute).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from ..core import draws
from ..core.batching import BatchSize, run_chunked
from ..core.draws import resolve_seed
from ..core.options import Option
from ..core.registry import register
from ._base import Attributor, Call, Partial
from ._layers import NeuronSpec, Space
from ._options import SPACE
from ._refs import make_refs
from .smooth import NOISE_LEVEL, STDEV, noise_scale

__all__ = ["GradientShap", "gradient_shap_draws"]


#: Streams of :mod:`unveil.core.draws` a call reads: background indices, points on the segment
#: (one draw per sample: small pieces, as chunks may be a few samples) and input noise.
_INDEX, _ALPHA, _NOISE = 1, 2, 0
_SCALAR_PIECE = 1 << 10


def gradient_shap_draws(
    n_rows: int, n_samples: int, n_background: int, seed: int, *,
    point_shape: tuple[int, ...], noise: bool, dtype: torch.dtype, device: torch.device,
    start: int = 0, stop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The random draws of (row, sample) pairs ``start .. stop`` (all by default), flat in
    row-major (row, sample) order.

    Returns background indices (K,), alphas (K,) and standard normal noise (K, *point_shape)
    or ``None``, from counter-based streams of ``seed`` (:mod:`unveil.core.draws`): a pair's
    draws are the same whichever chunk asks for them.
    """
    stop = n_rows * n_samples if stop is None else stop
    idx = draws.integers(seed, start, stop, n_background, stream=_INDEX, piece=_SCALAR_PIECE,
                         device=device)
    alpha = draws.uniform(seed, start, stop, stream=_ALPHA, piece=_SCALAR_PIECE,
                          dtype=torch.float64, device=device).to(dtype)
    d = math.prod(point_shape)
    eps = draws.normal(seed, start * d, stop * d, stream=_NOISE, piece=draws.piece_for(d),
                       dtype=dtype, device=device).view(-1, *point_shape) if noise else None
    return idx, alpha, eps


@register(
    "gradient_shap", family="gradient", needs_gradients=True, stochastic=True,
    display_name="Gradient SHAP", signed=True, common=("background",),
    options=(
        Option("n_samples", int, 16, "random draws (background row, point on the segment) per "
               "explained row", low=1),
        dataclasses.replace(NOISE_LEVEL, default=0.0), STDEV, *SPACE,
    ),
)
class GradientShap(Attributor):
    """GradientSHAP: the mean of ``(x - b) * grad f(b + alpha (x - b))`` over random draws.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017;
    Erion et al., "Improving performance of deep learning models with axiomatic attribution
    priors and expected gradients", Nature Machine Intelligence 2021.

    Parameters
    ----------
    n_samples : int
        Draws per explained row (default 16).
    noise_level : float
        Input noise standard deviation as a fraction of each row's range (default 0).
    stdev : float, optional
        Absolute input noise standard deviation (Captum's ``stdevs``), overriding
        ``noise_level``.
    batch_size : int or "auto"
        Rows (row x draw) per chunk.

    Call with ``background=`` (M, ...) reference inputs (required), ``seed=``, ``layer=``,
    ``neuron=``. ``exp.stderr`` is the Monte-Carlo standard error of each value.
    """

    def __init__(
        self,
        model: Any,
        *,
        n_samples: int = 16,
        noise_level: float = 0.0,
        stdev: float | None = None,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.stdev = stdev

    def _attribute(
        self,
        call: Call,
        *,
        background: Any = None,
        seed: int | None = None,
        layer: str | None = None,
        neuron: NeuronSpec = None,
    ) -> Partial:
        space = Space.of_call(call, method=self.name, batch_size=self.batch_size, layer=layer,
                              neuron=neuron)
        res = self._attribute_space(space, background=background, seed=resolve_seed(seed))
        return space.finish(res)

    def _attribute_space(
        self,
        space: Space,
        *,
        background: Any = None,
        seed: int | None = None,
    ) -> Partial:
        """GradientSHAP values at every point of ``space``."""
        seed = resolve_seed(seed)
        refs = make_refs(space, None, background, seed=seed, require_background=True)
        pts, s = space.points, self.n_samples
        sigma = noise_scale(pts, self.noise_level, self.stdev)
        noisy = bool((sigma > 0).any())
        shape1 = (-1,) + (1,) * (pts.ndim - 1)
        # float64 sums: the standard error subtracts two of them
        total = torch.zeros(space.reduce(pts).shape, dtype=torch.float64, device=pts.device)
        total_sq = torch.zeros_like(total)

        def run(a: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
            # this chunk's draws only (memory bounded by the chunk), the same for any chunking
            idx, alpha, eps = gradient_shap_draws(
                pts.shape[0], s, refs.per_row, seed, point_shape=tuple(pts.shape[1:]),
                noise=noisy, dtype=pts.dtype, device=pts.device, start=a, stop=c,
            )
            r = torch.arange(a, c, device=pts.device) // s
            x_r = pts[r]
            if eps is not None:
                x_r = eps.mul_(sigma[r].view(shape1)).add_(x_r)
            b = refs.points[idx]
            diff = x_r.sub_(b)  # in place: x_r is this chunk's own copy
            _, g = space.gradient(r, torch.addcmul(b, alpha.view(shape1), diff))
            return space.reduce(diff.mul_(g)), r

        def consume(_a: int, _c: int, res: tuple[torch.Tensor, torch.Tensor]) -> None:
            v = res[0].to(torch.float64)
            total.index_add_(0, res[1], v)
            total_sq.index_add_(0, res[1], v * v)

        run_chunked(
            run, pts.shape[0] * s, consume=consume, batch_size=self.batch_size,
            model=space.model, grad=True, key=space.key("gradient", pts.shape[0] * s),
        )
        mean = total / s
        out = Partial(values=mean.to(pts.dtype), seed=seed, params={"background": refs.label})
        if s > 1:
            var = (total_sq - s * mean * mean).clamp_min(0) / (s - 1)
            out.stderr = (var / s).sqrt().to(pts.dtype)
        if noisy:
            out.add(params={"sigma": sigma.cpu().tolist()})
        return out
