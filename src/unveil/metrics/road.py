"""ROAD: RemOve And Debias (Rong et al., 2022, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML).

Removing pixels by setting them to a constant leaks the removed shape to the model; ROAD instead
imputes each removed pixel from its neighbours by *noisy linear imputation*: the removed values
solve the sparse linear system in which every removed pixel equals the weighted mean of its eight
neighbours (weight 1/6 for the four direct ones, 1/12 for the diagonals), and a little Gaussian
noise is added. Here that system is solved for the whole chunk at once by conjugate gradients
(the matrix is a weighted graph Laplacian restricted to the removed pixels: symmetric, positive
definite wherever a removed region touches a kept pixel), with 3x3 convolutions as the product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..core.batching import BatchSize
from ..core.explanation import Explanation
from ..errors import InputError, OptionError
from ._common import MetricResult, Output, nanmean, prepare, score_rows
from ._features import FeatureSpec
from ._features import features as feature_set

__all__ = ["noisy_linear_imputation", "road"]

_W = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def noisy_linear_imputation(
    x: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01,
    generator: torch.Generator | None = None, noise_field: torch.Tensor | None = None,
    tol: float = 1e-6, max_iter: int | None = None,
) -> torch.Tensor:
    """Impute the ``removed`` (bool, like ``x``) pixels of images ``x`` (N, C, H, W).

    Each channel's removed pixels solve ``deg_i x_i - sum_j w_ij x_j = 0`` over in-image
    neighbours ``j`` (known ``x_j`` moved to the right-hand side); ``noise`` times standard
    normal noise (``noise_field`` if given, else drawn from ``generator``) is added to them.
    """
    if x.ndim != 4 or removed.shape != x.shape:
        raise InputError(f"ROAD imputation needs images (N, C, H, W) and a mask of the same shape, "
                         f"got {tuple(x.shape)} and {tuple(removed.shape)}")
    n, c, h, w = x.shape
    xs = x.double().reshape(n * c, 1, h, w)
    m = removed.reshape(n * c, 1, h, w).double()
    k = _W.to(device=x.device, dtype=torch.float64).view(1, 1, 3, 3)

    def conv(t: torch.Tensor) -> torch.Tensor:  # zero padding: in-image neighbours only
        return F.conv2d(t, k, padding=1)

    deg = conv(torch.ones(1, 1, h, w, dtype=torch.float64, device=x.device))

    def matvec(u: torch.Tensor) -> torch.Tensor:
        return m * (deg * u - conv(u))

    rhs = m * conv(xs * (1 - m))
    sol = torch.zeros_like(xs)
    r = rhs.clone()
    d = r.clone()
    rr = (r * r).sum((1, 2, 3), keepdim=True)
    stop = tol * tol * rr.clamp(min=1e-30)
    for _ in range(max_iter or 4 * (h + w) + 20):
        if bool((rr <= stop).all()):
            break
        ad = matvec(d)
        dad = (d * ad).sum((1, 2, 3), keepdim=True)
        alpha = torch.where(dad > 0, rr / dad.clamp(min=1e-300), torch.zeros_like(rr))
        sol = sol + alpha * d
        r = r - alpha * ad
        rr_new = (r * r).sum((1, 2, 3), keepdim=True)
        beta = torch.where(rr > 0, rr_new / rr.clamp(min=1e-300), torch.zeros_like(rr))
        d = r + beta * d
        rr = rr_new
    if noise_field is None:
        noise_field = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    filled = sol + noise * noise_field.reshape(n * c, 1, h, w).double()
    out = torch.where(m > 0, filled, xs)
    return out.reshape(n, c, h, w).to(x.dtype)


def road(
    model: Any, exp: Explanation, *, order: Literal["morf", "lerf"] = "morf",
    percentages: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    noise: float = 0.01, features: FeatureSpec = "auto", output: Output = "probs",
    seed: int | None = 0, batch_size: BatchSize = "auto",
) -> MetricResult:
    """ROAD (Rong et al., 2022): the target score after the top ``percentages`` of features (most
    relevant first for ``order="morf"``, least relevant for ``"lerf"``) are removed and imputed
    by noisy linear imputation; ``per_sample`` is the mean over the percentages (lower is better
    for ``"morf"``, higher for ``"lerf"``). ``output="accuracy"`` scores whether the prediction
    stays the explained class, as in the paper and Quantus. The imputation noise is drawn once
    per sample from ``seed``."""
    if order not in ("morf", "lerf"):
        raise OptionError(f"order must be 'morf' or 'lerf', got {order!r}")
    if not percentages or any(not 0 <= q <= 1 for q in percentages):
        raise OptionError(f"percentages must be fractions in [0, 1], got {percentages!r}")
    p = prepare(model, exp)
    if not p.is_image:
        raise InputError(f"ROAD imputes images (N, C, H, W); got inputs of shape {tuple(p.x.shape)}")
    feats = feature_set(p, features)
    er = feats.element_ranks(feats.ranks(order))
    counts = torch.tensor([int(q * feats.n_features) for q in percentages], device=p.x.device)
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    field = torch.randn(p.x.shape, generator=g, dtype=torch.float64).to(p.x.device)
    k = len(percentages)

    def build(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(a, b, device=p.x.device)
        i, j = rows // k, rows % k
        removed = (er[i] < counts[j].view(-1, 1)).view(b - a, *p.x.shape[1:])
        return noisy_linear_imputation(p.x[i], removed, noise=noise, noise_field=field[i]), i

    scores = score_rows(p.model, build, p.n * k, p.targets, output=output, batch_size=batch_size,
                        key=("road", tuple(p.x.shape[1:]))).view(p.n, k)
    per = scores.double().mean(1)
    return MetricResult(
        f"road_{order}" if order == "lerf" else "road", nanmean(per), per.cpu().numpy(), order == "lerf",
        details={"percentages": list(percentages), "curve": scores.mean(0).cpu().numpy(),
                 "curves": scores.cpu().numpy()},
        params={"order": order, "noise": noise, "output": output, "seed": seed},
    )
