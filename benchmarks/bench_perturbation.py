"""Perturbation methods and LIME: unveil vs Captum 0.9 and lime 0.2.0.1.

- **W1** (ResNet-like CNN, 3x64x64, batch 8): Occlusion with 3x8x8 windows, stride 4 (225
  windows: 1800 model rows), and FeatureAblation over the 64 8x8 patches (512 model rows), zero
  baseline. Captum at its defaults (``perturbations_per_eval=1``: one perturbation of the 8
  images per call) and hand-tuned (``perturbations_per_eval=16``). ``x floor``: time over a
  plain torch forward of the same number of rows at the best batch size (chosen over batch
  sizes 1..128 in this run). unveil, both Captum settings and the floor are timed in turns
  (medians of 3 rounds), so that a changing machine load hits them alike. Outputs are checked
  to agree.
- **LIME tables** (W2: breast-cancer MLP, 30 features; training rows as background; 5000
  samples): time per explanation, against ``LimeTabularExplainer`` (quartile discretizer,
  regression mode, all 30 features).
- **LIME images** (scikit-learn's two bundled photos resized to 224x224; a small CNN, three
  strided convolutions, random weights; SLIC superpixels, 50 segments, given to both
  libraries; zero fill; 1000 samples): time per image against ``LimeImageExplainer`` at its
  defaults (``batch_size=10``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import (
    Context,
    Row,
    alternate,
    best_batch,
    floor_run,
    median_time,
    per_row_floor,
    w1,
    w2,
)


def w1_floor(ctx: Context, model: nn.Module, x: torch.Tensor) -> float:
    """Seconds per forward row of W1 at its best batch size (cached in ctx)."""
    return w1_best(ctx, model, x)[1]


def w1_best(ctx: Context, model: nn.Module, x: torch.Tensor) -> tuple[int, float]:
    """W1's best forward batch size and its seconds per row (cached in ctx)."""
    if "w1_best" not in ctx.cache:
        ctx.cache["w1_best"] = best_batch(model, x, grad=False, quick=True)
    return ctx.cache["w1_best"]  # type: ignore[no-any-return]


def _w1_rows(ctx: Context) -> list[Row]:
    from captum.attr import FeatureAblation as CFA
    from captum.attr import Occlusion as COcc

    from unveil.attribution.perturbation import FeatureAblation, Occlusion, occlusion_windows
    from unveil.core.groups import patches

    model, x = w1(batch=2, size=32) if ctx.quick else w1(batch=8)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        t = model(x).argmax(1)
    win = 16 if ctx.quick else 8
    step = win // 2  # occlusion: windows overlap by half (the default stride)
    grp = patches(tuple(x.shape[1:]), win)
    best_bs = None if ctx.quick else w1_best(ctx, model, x)[0]
    rows: list[Row] = []
    n = x.shape[0]
    n_win = int(np.prod([len(a) for a in occlusion_windows(tuple(x.shape[1:]), win, step)[2]]))
    cases: list[tuple[str, str, int, Any, Any, Any]] = [
        ("occlusion", f"3x{win}x{win} stride {step}", n + n * n_win,
         lambda: Occlusion(model, window=win, stride=step)(x, target=t),
         lambda ppe: COcc(model).attribute(x, sliding_window_shapes=(3, win, win),
                                           strides=(3, step, step), target=t, baselines=0,
                                           perturbations_per_eval=ppe),
         lambda: Occlusion(model, window=win, stride=step)(x[:2], target=t[:2])),
        ("feature_ablation", f"{grp.n_groups} patches", n + n * grp.n_groups,
         lambda: FeatureAblation(model)(x, target=t, groups=grp),
         lambda ppe: CFA(model).attribute(x, target=t, feature_mask=grp.labels, baselines=0,
                                          perturbations_per_eval=ppe),
         lambda: FeatureAblation(model)(x[:2], target=t[:2], groups=grp)),
    ]
    for name, what, n_rows, ours, theirs, warm in cases:
        warm()  # allocator and automatic batch size
        out: list[Any] = []
        ref: dict[int, Any] = {}
        fns = [lambda ours=ours, out=out: out.append(ours())]
        for ppe in (1, 16):
            fns.append(lambda ppe=ppe, ref=ref, theirs=theirs: ref.__setitem__(ppe, theirs(ppe)))
        if best_bs is not None:  # the floor evaluates the method's rows (first pass included)
            fns.append(floor_run(model, x, n_rows, best_bs, grad=False))
        # unveil, Captum twice and the floor in turns: fair under a changing machine load
        times = alternate(fns, repeats=1 if ctx.quick else 3, warmup=0)
        exp = out[-1]
        floor = times[3] if best_bs is not None else None
        for k, (ppe, label) in enumerate(((1, "Captum default"), (16, "Captum ppe=16"))):
            agree = float(np.abs(exp.values - ref[ppe].numpy()).max())
            rows.append(Row("perturbation", name, f"W1 {what}", times[0], label, times[1 + k],
                            exp.n_evals, floor if k == 0 else None, note=f"max |diff| {agree:.1e}"))
    return rows


def _lime_tables(ctx: Context) -> list[Row]:
    from lime.lime_tabular import LimeTabularExplainer

    from unveil.attribution.lime import Lime

    wl = w2()
    n_samples = 500 if ctx.quick else 5000
    x, train = wl.x[: 2 if ctx.quick else 16], wl.x_train
    ours = Lime(wl.model, n_samples=n_samples)
    ours(x, target=None, background=train, seed=0)
    sec = median_time(lambda: ours(x, target=None, background=train, seed=1), repeats=ctx.repeats(5), warmup=0)

    def f(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wl.model(torch.as_tensor(a, dtype=torch.float32)).numpy()

    lx = LimeTabularExplainer(train.numpy(), mode="regression", random_state=0)
    x_np = x.numpy()
    k = 1 if ctx.quick else 4
    ref = median_time(lambda: [lx.explain_instance(x_np[i], f, num_features=30, num_samples=n_samples)
                               for i in range(k)], repeats=ctx.repeats(3), warmup=1) / k
    floor = per_row_floor(wl.model, x, grad=False, quick=ctx.quick) * n_samples
    return [Row("lime", "lime tables", f"W2 {n_samples} samples (per row)", sec / len(x), "lime", ref,
                n_samples, floor)]


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _lime_images(ctx: Context) -> list[Row]:
    from lime.lime_image import LimeImageExplainer
    from sklearn.datasets import load_sample_images

    from unveil.attribution.lime import Lime
    from unveil.core.groups import superpixels

    torch.manual_seed(0)
    model = _SmallCNN().eval()
    size = 64 if ctx.quick else 224
    imgs = torch.tensor(np.stack(load_sample_images().images)).permute(0, 3, 1, 2).float() / 255
    x = nn.functional.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False)
    grp = superpixels(x, n_segments=50)
    with torch.inference_mode():
        t = model(x).argmax(1)
    n = 100 if ctx.quick else 1000
    ours = Lime(model, n_samples=n)
    ours(x[:1], target=t[:1], groups=_one_image(grp, 0), seed=0)
    sec = median_time(lambda: ours(x, target=t, groups=grp, seed=1), repeats=ctx.repeats(3), warmup=0)

    def classify(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.as_tensor(batch, dtype=torch.float32).permute(0, 3, 1, 2)).numpy()

    import lime.lime_image as li

    li.tqdm = lambda it, **_k: it  # lime 0.2.0.1 always shows a progress bar
    lx = LimeImageExplainer(random_state=0)

    def lime_all() -> None:
        for i in range(len(x)):
            lab = grp.labels[i, 0].numpy()
            lx.explain_instance(x[i].permute(1, 2, 0).double().numpy(), classify, labels=(int(t[i]),),
                                top_labels=None, hide_color=0, num_samples=n, segmentation_fn=lambda _im, lab=lab: lab)

    ref = median_time(lime_all, repeats=ctx.repeats(3), warmup=0)
    floor = per_row_floor(model, x, grad=False, quick=ctx.quick) * n
    return [Row("lime", "lime images", f"{size}px small CNN {n} samples (per image)", sec / len(x),
                "lime", ref / len(x), n, floor)]


def _one_image(grp: Any, i: int) -> Any:
    """The groups of image ``i`` alone (for a one-image warm-up)."""
    from unveil.core.groups import FeatureGroups

    return FeatureGroups(grp.n_groups, grp.names, grp.kind, labels=grp.labels[i:i + 1])


def run(ctx: Context) -> list[Row]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _lime_tables(ctx) + _lime_images(ctx) + _w1_rows(ctx)
