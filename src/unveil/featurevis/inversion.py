"""Feature inversion: reconstruct inputs from one layer's representation.

Mahendran & Vedaldi (2015) "Understanding deep image representations by inverting them"
(CVPR). Given inputs ``x`` and a layer ``Φ``, find ``x̂`` inside the valid box that minimises

    ||Φ(x̂) - Φ(x)||² / ||Φ(x)||²  +  λ_α R_α(x̂)  +  λ_TV R_TV^β(x̂)

where ``R_α`` is the mean ``|x̂ - c|^α`` (``c`` the centre of the box, values scaled by half the
box width) and ``R_TV^β`` the mean ``(dx² + dy²)^(β/2)`` (differences scaled by the box width).
The first term, the relative representation error, is reported at every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import nn

from ..core.hooks import layer_name
from ..core.model import as_model
from ..errors import OptionError
from . import objectives as O
from ._taps import INPUT, taps
from ._util import check_differentiable, positive_float, positive_int, resolve_bounds, steps_alias
from .transforms import Compose, Transform
from .visualize import optimise

__all__ = ["Inversion", "invert"]


@dataclass
class Inversion:
    """The result of :func:`invert`.

    Attributes
    ----------
    images
        (N, ...) the reconstructions, inside the bounds.
    originals
        (N, ...) the inputs whose representation was inverted.
    error, initial_error
        (N,) relative representation error ``||Φ(x̂) - Φ(x)||² / ||Φ(x)||²`` at the end and at
        the initialisation.
    trace, trace_per_image
        (steps,) the mean relative error at each step, and (steps, N) per input.
    """

    images: np.ndarray
    originals: np.ndarray
    layer: str
    error: np.ndarray
    initial_error: np.ndarray
    trace: np.ndarray
    trace_per_image: np.ndarray
    params: dict[str, Any]
    seed: int
    n_evals: int
    timings: dict[str, float] = field(default_factory=dict)

    def plot(self, ax: Any = None) -> Any:
        """Originals followed by their reconstructions; returns the Axes."""
        from ._plot import plot_inputs

        both = np.concatenate([self.originals, self.images], axis=0)
        return plot_inputs(both, self.params.get("bounds"), ax=ax,
                           title=f"inverting {self.layer!r}: originals, then reconstructions")


def _init(init: Any, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    centre, span = (low + high) / 2, high - low
    if isinstance(init, str):
        if init == "noise":
            noise = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)
            return torch.maximum(torch.minimum(centre + 0.1 * span * noise, high), low)
        if init == "mean":
            return centre.expand_as(x).clone()
        raise OptionError(f"init must be 'noise', 'mean' or a tensor, got {init!r}")
    t = torch.as_tensor(np.asarray(init.detach().cpu() if isinstance(init, torch.Tensor) else init))
    try:
        t = t.to(device=x.device, dtype=x.dtype).expand_as(x).clone()
    except RuntimeError:
        raise OptionError(f"init of shape {tuple(t.shape)} does not broadcast to the inputs {tuple(x.shape)}") from None
    return torch.maximum(torch.minimum(t, high), low)


def _priors(alpha: float, alpha_weight: float, tv: float, beta: float, centre: torch.Tensor,
            half: torch.Tensor, width: float, spatial: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-input prior penalty on the reconstruction (values scaled to the box)."""
    tv_obj = O.total_variation(beta)

    def fn(xh: torch.Tensor) -> torch.Tensor:
        out = xh.new_zeros(xh.shape[0])
        if alpha_weight:
            out = out + alpha_weight * ((xh - centre) / half).abs().pow(alpha).flatten(1).mean(1)
        if tv and spatial:
            out = out + tv * tv_obj({INPUT: xh / width})
        return out

    return fn


def invert(
    model: Any,
    x: Any,
    *,
    layer: str | nn.Module,
    n_steps: int = 300,
    steps: int | None = None,
    lr: float = 0.05,
    seed: int = 0,
    bounds: tuple[Any, Any] | None = None,
    tv: float = 0.05,
    beta: float = 2.0,
    alpha: float = 6.0,
    alpha_weight: float = 1e-3,
    init: Union[Literal["noise", "mean"], torch.Tensor, np.ndarray] = "noise",
    transforms: Transform | Sequence[Transform] | None = None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stop_early: bool = True,
    progress: bool = False,
) -> Inversion:
    """Reconstruct ``x`` from ``layer``'s representation (Mahendran & Vedaldi 2015).

    Parameters
    ----------
    model
        A differentiable model.
    x
        Inputs (N, ...) whose representation at ``layer`` is inverted, each independently.
    layer
        Dotted name of the layer, as in ``model.named_modules()``.
    n_steps, lr, seed
        Adam steps (``steps=`` is accepted as another name for ``n_steps``); ``lr`` is a fraction of the box width per step; ``seed`` fixes the noise
        initialisation and any random transforms.
    bounds
        ``(low, high)`` box for the reconstruction; default the range of ``x``.
    tv, beta
        Weight and exponent of the total-variation prior (spatial inputs only; ``beta=2`` as in
        the paper).
    alpha, alpha_weight
        Exponent (6 in the paper) and weight of the alpha-norm prior.
    init
        ``"noise"`` (the box centre plus 10 % Gaussian noise), ``"mean"`` (the centre) or a tensor.
    transforms, preprocess
        Optional per-step random transforms (images) and a map applied before the model.

    Returns
    -------
    Inversion
        ``.images``, ``.error`` and ``.initial_error`` (N,), ``.trace`` (steps,).
    """
    m = as_model(model)
    layer = layer_name(m.module, layer)
    xt = m.prepare(x)
    steps = positive_int(steps_alias(n_steps, steps), "n_steps")
    lr = positive_float(lr, "lr")
    for name, v in (("tv", tv), ("alpha_weight", alpha_weight)):
        positive_float(v, name, allow_zero=True)
    beta, alpha = positive_float(beta, "beta"), positive_float(alpha, "alpha")
    if not xt.is_floating_point():
        raise OptionError(f"invert reconstructs float inputs, got {xt.dtype}; for token ids invert an embedding layer's output instead")
    lo, hi = float(xt.min()), float(xt.max())
    low, high = resolve_bounds(bounds, tuple(xt.shape[1:]), m, default=(lo, hi) if hi > lo else (lo - 1.0, hi + 1.0))
    transform: Transform | None = None
    if transforms is not None:
        if xt.ndim != 4:
            raise OptionError(f"per-step transforms need images (N, C, H, W), got shape {tuple(xt.shape)}")
        transform = transforms if isinstance(transforms, Transform) else Compose(list(transforms))
    g = torch.Generator().manual_seed(int(seed))
    width = float((high - low).mean())
    prior = _priors(alpha, alpha_weight, tv, beta, (low + high) / 2, (high - low) / 2, width, xt.ndim >= 3)
    # optimised in box coordinates u in [0, 1] per element: one learning rate fits every feature,
    # whether the inputs are pixels in [0, 1] or table columns in their own units (0.01 .. 4000)
    span = (high - low).clamp_min(torch.finfo(xt.dtype).eps)
    u = ((_init(init, xt, low, high, g) - low) / span).clamp(0, 1).requires_grad_(True)

    def image() -> torch.Tensor:
        return low + span * u

    errors: list[torch.Tensor] = []
    evals0, t0 = m.n_evals, time.perf_counter()
    with m.guard():
        check_differentiable(m, xt, "invert")
        with taps(m, [layer], need_output=False, stop_early=stop_early) as run:
            with torch.no_grad():
                target = run(preprocess(xt) if preprocess is not None else xt)[layer].detach()
            norm2 = target.flatten(1).pow(2).sum(1).clamp_min(torch.finfo(target.dtype).tiny)

            def rel_error(acts: dict[str, torch.Tensor]) -> torch.Tensor:
                a = acts[layer]
                if a.shape != target.shape:
                    raise OptionError(
                        f"layer {layer!r} gives shape {tuple(a.shape)} for the transformed input "
                        f"but {tuple(target.shape)} for the original; use transforms that keep the size"
                    )
                return (a - target).flatten(1).pow(2).sum(1) / norm2

            def objective(acts: dict[str, torch.Tensor]) -> torch.Tensor:
                err = rel_error(acts)
                errors.append(err.detach())
                return -(err + prior(acts[INPUT]))

            def project() -> None:
                with torch.no_grad():
                    u.clamp_(0, 1)

            optimise(run, objective, image, [u], steps=steps, lr=lr, generator=g,
                     transform=transform, preprocess=preprocess, after_step=project, progress=progress)
            t1 = time.perf_counter()
            with torch.no_grad():
                xh = image()
                final = rel_error(run(preprocess(xh) if preprocess is not None else xh))
    tr = torch.stack(errors).cpu().numpy()
    params = dict(layer=layer, n_steps=steps, lr=lr, tv=tv, beta=beta, alpha=alpha,
                  alpha_weight=alpha_weight, init=init if isinstance(init, str) else "tensor",
                  transforms=repr(transform), bounds=(low.cpu().numpy(), high.cpu().numpy()))
    return Inversion(
        images=xh.detach().cpu().numpy(), originals=xt.detach().cpu().numpy(), layer=layer,
        error=final.cpu().numpy(), initial_error=tr[0], trace=tr.mean(1), trace_per_image=tr,
        params=params, seed=int(seed), n_evals=m.n_evals - evals0,
        timings={"optimise": t1 - t0, "final": time.perf_counter() - t1},
    )
