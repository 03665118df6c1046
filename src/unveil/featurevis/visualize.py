"""Activation maximization: optimise inputs until they excite a unit, channel, layer or class.

Erhan, Bengio, Courville & Vincent (2009) "Visualizing higher-layer features of a deep
network"; Olah, Mordvintsev & Schubert (2017) "Feature Visualization", Distill. The input is
parameterised (pixels or a scaled, colour-decorrelated Fourier spectrum, see :mod:`.param`),
transformed randomly at every step (:mod:`.transforms`) and updated by Adam to increase an
:class:`~unveil.featurevis.objectives.Objective`. For inputs that are not images (tables,
sequences of features) the same loop finds "prototype inputs" inside a box given by ``bounds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import torch

from ..core.model import as_model
from ..errors import NotDifferentiableError, OptionError
from . import objectives as O
from ._taps import INPUT, taps
from ._util import (
    check_differentiable,
    check_shape,
    positive_float,
    positive_int,
    resolve_bounds,
    steps_alias,
)
from .param import Param, make_param
from .transforms import Compose, Transform, standard_transforms

__all__ = ["Visualization", "optimise", "resolve_transforms", "visualize"]

TransformSpec = Union[Transform, Sequence[Transform], Literal["auto", "standard"], None]


@dataclass
class Visualization:
    """The result of :func:`visualize`.

    Attributes
    ----------
    images
        The optimised inputs, (N, ...) as numpy, inside ``bounds`` (images in [0, 1] by default).
    trace
        (steps,) the maximised quantity (objective minus regularizers) at each step, averaged
        over the batch, as seen through that step's random transformation.
    trace_per_image
        (steps, N) the same per image.
    values
        (N,) the objective (without regularizers) at the final inputs, untransformed.
    """

    images: np.ndarray
    trace: np.ndarray
    trace_per_image: np.ndarray
    values: np.ndarray
    objective: str
    params: dict[str, Any]
    seed: int
    n_evals: int
    timings: dict[str, float] = field(default_factory=dict)

    def plot(self, ax: Any = None) -> Any:
        """Draw the images side by side (or prototype rows as lines); returns the Axes."""
        from ._plot import plot_inputs

        return plot_inputs(self.images, self.params.get("bounds"), ax=ax, title=self.objective)


def resolve_transforms(spec: TransformSpec, shape: tuple[int, ...]) -> Transform | None:
    """``"auto"``: standard transforms for images, none otherwise; a list becomes a Compose."""
    image = len(shape) == 4
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in ("auto", "standard"):
            raise OptionError(f"transforms must be 'auto', 'standard', None or a list, got {spec!r}")
        if not image:
            if spec == "standard":
                raise OptionError(f"transforms='standard' needs images (N, C, H, W), got shape {shape}")
            return None
        return standard_transforms(min(shape[2], shape[3]))
    if not image:
        raise OptionError(f"per-step transforms need images (N, C, H, W), got shape {shape}")
    if isinstance(spec, Transform):
        return spec
    return Compose(list(spec))


def _regularised(objective: O.Objective, l1: float, tv: float, blur: float, centre: torch.Tensor) -> O.Objective:
    full = objective
    if l1:
        full = full - l1 * O.input_norm(1.0, constant=centre)
    if tv:
        full = full - tv * O.total_variation(1.0)
    if blur:
        full = full - blur * O.blur(0.5)
    return full


def optimise(
    run: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    image_fn: Callable[[], torch.Tensor],
    params: list[torch.Tensor],
    *,
    steps: int,
    lr: float,
    generator: torch.Generator,
    transform: Transform | None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None,
    after_step: Callable[[], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Adam on ``params`` to *maximise* ``loss_fn``'s per-image values; returns (steps, N) trace."""
    opt = torch.optim.Adam(params, lr=lr)
    trace: torch.Tensor | None = None
    it: Any = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="optimising", leave=False)
    with torch.enable_grad():
        for i in it:
            img = image_fn()
            x = transform(img, generator) if transform is not None else img
            if preprocess is not None:
                x = preprocess(x)
            acts = run(x)
            acts[INPUT] = img
            vals = loss_fn(acts)
            if i == 0:
                _check_values(vals, img.shape[0])
            grads = torch.autograd.grad(-vals.sum(), params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = torch.zeros_like(p) if g is None else g
            opt.step()
            if after_step is not None:
                after_step()
            if trace is None:
                trace = vals.new_empty((steps, vals.shape[0]))
            trace[i] = vals.detach()
    for p in params:
        p.grad = None
    assert trace is not None
    return trace


def _check_values(vals: torch.Tensor, n: int) -> None:
    if vals.shape != (n,):
        raise OptionError(f"an objective must give one value per image, shape ({n},); got {tuple(vals.shape)}")
    if not vals.requires_grad:
        raise NotDifferentiableError(
            "the objective does not depend differentiably on the input: the model may detach, "
            "round or call numpy inside forward, or the layer does not depend on the input"
        )


def visualize(
    model: Any,
    objective: O.Objective | str,
    *,
    shape: Sequence[int] = (1, 3, 64, 64),
    n_steps: int = 256,
    steps: int | None = None,
    seed: int = 0,
    param: Literal["auto", "fourier", "pixel"] = "auto",
    lr: float = 0.1,
    transforms: TransformSpec = "auto",
    bounds: tuple[Any, Any] | None = None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    decorrelate: bool | None = None,
    decay_power: float = 1.0,
    l1: float = 0.0,
    tv: float = 0.0,
    blur: float = 0.0,
    stop_early: bool = True,
    progress: bool = False,
) -> Visualization:
    """Optimise a batch of inputs to maximise ``objective`` (activation maximization).

    Parameters
    ----------
    model
        A differentiable model (``torch.nn.Module`` or torch function).
    objective
        An :class:`~unveil.featurevis.objectives.Objective` (one value per image), or
        ``"layer:c"`` for ``channel("layer", c)``. Indices given per image optimise many
        objectives at once, e.g. ``channel("layer3", range(32))`` with ``shape=(32, 3, 64, 64)``.
    shape
        The batch shape to optimise: (N, C, H, W) images or e.g. (N, F) table rows.
    n_steps, lr, seed
        Adam steps (``steps=`` is accepted as another name for ``n_steps``) and learning rate (in the parameterization's units); ``seed`` fixes the
        initialisation and the random transformations, so runs are reproducible.
    param
        ``"fourier"`` (decorrelated, 1/f-scaled spectrum; images only), ``"pixel"``, or
        ``"auto"``: Fourier for images, pixel otherwise.
    transforms
        ``"auto"`` (jitter, scale, rotation for images; none otherwise), ``"standard"``, a list
        of transforms from :mod:`unveil.featurevis.transforms`, or ``None``.
    bounds
        ``(low, high)`` box of valid inputs (numbers or per-feature arrays); default (0, 1) for
        images. Required for other inputs ("prototype inputs" stay inside it).
    preprocess
        Applied after the transforms, before the model (e.g. the model's normalization).
    decorrelate, decay_power
        Fourier options: colour decorrelation (default: on for 3 channels) and the 1/f power.
    l1, tv, blur
        Weights of regularizers subtracted from the objective: L1 distance from the box
        centre, total variation, and the blur penalty (see :mod:`.objectives`).
    stop_early
        Cut the forward pass after the last layer the objective reads.

    Returns
    -------
    Visualization
        ``.images`` (N, ...), ``.trace`` (steps,), ``.trace_per_image``, ``.values`` (N,).
    """
    m = as_model(model)
    obj = O.as_objective(objective).named(m.module)
    shp = check_shape(shape)
    steps = positive_int(steps_alias(n_steps, steps), "n_steps")
    lr = positive_float(lr, "lr")
    for name, w in (("l1", l1), ("tv", tv), ("blur", blur)):
        positive_float(w, name, allow_zero=True)
    image = len(shp) == 4
    low, high = resolve_bounds(bounds, shp[1:], m, default=(0.0, 1.0) if image else None)
    transform = resolve_transforms(transforms, shp)
    g = torch.Generator().manual_seed(int(seed))
    p: Param = make_param(param, shp, low, high, generator=g, decorrelate=decorrelate,
                          decay_power=decay_power, device=m.device, dtype=m.dtype)
    full = _regularised(obj, l1, tv, blur, (low + high) / 2)
    evals0, t0 = m.n_evals, time.perf_counter()
    with m.guard():
        with torch.no_grad():
            check_differentiable(m, p(), "visualize")
        layers = full.layers | obj.layers
        with taps(m, sorted(layers), need_output=obj.needs_output, stop_early=stop_early) as run:
            trace = optimise(run, full, p, p.params, steps=steps, lr=lr, generator=g,
                             transform=transform, preprocess=preprocess, progress=progress)
            t1 = time.perf_counter()
            with torch.no_grad():
                final = p()
                x = preprocess(final) if preprocess is not None else final
                acts = run(x)
                acts[INPUT] = final
                values = obj(acts)
    params = dict(shape=shp, n_steps=steps, param=type(p).__name__, lr=lr, l1=l1, tv=tv, blur=blur,
                  decay_power=decay_power, decorrelate=p.decorrelate, transforms=repr(transform),
                  bounds=(low.cpu().numpy(), high.cpu().numpy()))
    tr = trace.detach().cpu().numpy()
    return Visualization(
        images=final.detach().cpu().numpy(), trace=tr.mean(1), trace_per_image=tr,
        values=values.detach().cpu().numpy(), objective=obj.name, params=params, seed=int(seed),
        n_evals=m.n_evals - evals0,
        timings={"optimise": t1 - t0, "final": time.perf_counter() - t1},
    )

