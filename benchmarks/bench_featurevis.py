"""Feature visualization against torch-lucent 0.1.8 on W1 (the ResNet-like CNN) at 64x64.

Workload: 256 Adam steps of a channel objective (``layer3``, channel 7), one image, each
library with its own default parameterization (decorrelated Fourier) and random transforms.
Lucent is run with its resize pinned to the 64x64 image (``fixed_image_size=64``, "upsampling
off") and at its defaults (it silently upsamples every step to 224x224). A second workload
optimises 32 channels at once (image ``i`` maximises channel ``i``), compared with Lucent's
sum of 32 per-image channel objectives and with the forward+backward floor: W1's best per-row
time for a forward and a backward pass to the input, times 32 rows, times the steps.

Lucent registers a forward hook on every module and never removes them, so every Lucent run
gets its own copy of the model. Lucent imports torchvision: the repo's stand-in is used.
Feature inversion and dataset examples have no reference library; they are timed against the
floor only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from ._common import (
    Context,
    Row,
    median_time,
    per_row_floor,
    smooth_images,
    use_torchvision_stub,
    w1,
)

LAYER, CHANNEL = "layer3", 7


def _time(run: Callable[[int], Any], steps: int, repeats: int) -> float:
    """Median time of ``run(steps)`` after a short warm-up run."""
    run(min(steps, 8))
    return median_time(lambda: run(steps), repeats=repeats, warmup=0)


def _lucent(pristine: torch.nn.Module, steps: int, *, size: int, fixed: bool, batch: int = 1) -> None:
    from lucent.optvis import objectives, param, render

    model = copy.deepcopy(pristine)  # Lucent leaves its hooks on the model
    if batch == 1:
        obj: Any = f"{LAYER}:{CHANNEL}"
    else:
        obj = objectives.Objective.sum([objectives.channel(LAYER, c, batch=c) for c in range(batch)])
    render.render_vis(
        model, obj, param_f=lambda: param.image(size, batch=batch), thresholds=(steps,),
        progress=False, show_image=False, fixed_image_size=size if fixed else None,
    )


def run(ctx: Context) -> list[Row]:
    import unveil.featurevis as fv

    # quick: a smoke run in seconds (tiny images, two steps, no floors)
    size, batch, steps = (32, 4, 2) if ctx.quick else (64, 32, 256)
    pristine, sample = w1(size=size)
    reps = ctx.repeats(3)
    model = copy.deepcopy(pristine)
    one, many = fv.objectives.channel(LAYER, CHANNEL), fv.objectives.channel(LAYER, range(batch))
    t_one = _time(lambda s: fv.visualize(model, one, shape=(1, 3, size, size), n_steps=s), steps, reps)
    # the batch runs take minutes on a shared CPU: one timed run after the warm-up
    t_many = _time(lambda s: fv.visualize(model, many, shape=(batch, 3, size, size), n_steps=s), steps, 1)
    floor_row = None if ctx.quick else per_row_floor(pristine, sample, grad=True)
    ref: dict[str, float | None] = {"fixed": None, "default": None, "batch": None}
    note = ""
    try:
        use_torchvision_stub()
        import lucent  # noqa: F401

        ref["fixed"] = _time(lambda s: _lucent(pristine, s, size=size, fixed=True), steps, reps)
        if not ctx.quick:
            ref["default"] = _time(lambda s: _lucent(pristine, s, size=size, fixed=False), steps, reps)
            ref["batch"] = _time(lambda s: _lucent(pristine, s, size=size, fixed=True, batch=batch), steps, 1)
    except ImportError as exc:  # pragma: no cover - depends on the install
        note = f"lucent unavailable: {exc}"

    def floor(rows: int) -> float | None:
        return None if floor_row is None else floor_row * rows

    work = f"W1 {size}x{size}"
    rows = [
        Row("featurevis", "visualize 1 channel", work, t_one, "lucent (resize off)", ref["fixed"],
            n_evals=steps, floor_s=floor(steps), note=note or "target ratio <= 1"),
        Row("featurevis", "visualize 1 channel", work, t_one, "lucent (defaults, 224)", ref["default"],
            n_evals=steps, floor_s=floor(steps)),
        Row("featurevis", f"visualize {batch} channels", work, t_many, f"lucent x{batch} (resize off)",
            ref["batch"], n_evals=steps * batch, floor_s=floor(steps * batch),
            note="target x floor <= 1.5"),
    ]
    if not ctx.quick:
        rows += _no_reference(pristine, ctx, floor_row or 0.0)
    return rows


def _no_reference(pristine: torch.nn.Module, ctx: Context, floor_row: float) -> list[Row]:
    """Inversion and dataset examples, timed against the floor only."""
    import unveil.featurevis as fv

    model = copy.deepcopy(pristine)
    steps, size = 64, 64
    x = smooth_images(8, size, seed=3)
    t_inv = _time(lambda s: fv.invert(model, x, layer=LAYER, n_steps=s), steps, ctx.repeats(3))
    data = smooth_images(512, size, seed=4)
    t_ex = median_time(lambda: fv.dataset_examples(model, data, layer=LAYER, unit=CHANNEL, k=9),
                       repeats=ctx.repeats(3))
    fwd_row = per_row_floor(pristine, x, grad=False)
    return [
        Row("featurevis", "invert (layer3)", "W1 64x64 x8", t_inv, n_evals=8 * steps,
            floor_s=floor_row * 8 * steps),
        Row("featurevis", "dataset_examples", f"W1 64x64 x{len(data)}", t_ex, n_evals=len(data),
            floor_s=fwd_row * len(data), note="forward floor; stops at layer3"),
    ]
