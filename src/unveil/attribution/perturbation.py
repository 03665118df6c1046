"""Perturbation methods: Occlusion, Feature Ablation and RISE.

They explain a score by how it changes when parts of the input are removed. None needs
gradients, so they work on torch modules and plain callables alike (scikit-learn
``predict_proba``, numpy functions). Perturbed inputs are built on the model's device in
chunks and evaluated in large batches.

- :class:`Occlusion` slides a window over the input (Zeiler & Fergus, 2014, "Visualizing and
  understanding convolutional networks"); an element's value is the mean score drop over the
  windows covering it (Captum's convention).
- :class:`FeatureAblation` removes one feature group at a time; each element of a group gets
  the group's score drop.
- :class:`RISE` averages random smooth masks weighted by the score of the masked input
  (Petsiuk et al., 2018, "RISE: Randomized input sampling for explanation of black-box
  models").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core import draws
from ..core.baselines import BaselineSpec, make_baseline
from ..core.batching import BatchSize, run_chunked
from ..core.draws import resolve_seed
from ..core.groups import FeatureGroups
from ..core.options import Option
from ..core.registry import register
from ..errors import InputError, OptionError
from ._base import Attributor, Call, Partial
from ._options import BASELINE, GROUPS, MASK_ID
from ._value_functions import Masker, make_game, resolve_groups

__all__ = ["RISE", "FeatureAblation", "Occlusion", "occlusion_windows"]

Window = int | Sequence[int] | None

#: Occlusion builds every window's keep mask once when they take at most this many elements
#: (32 MiB of float32), and per chunk otherwise.
_TABLE_LIMIT = 1 << 23


def _spec(v: Window, sample: tuple[int, ...], what: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """Expand a window or stride spec to one entry per sample axis (leading axes span all)."""
    t: tuple[int, ...]
    if v is None:
        t = default
    elif isinstance(v, (int, np.integer)):
        t = (int(v),) * min(2 if len(sample) == 3 else 1, len(sample))
    else:
        t = tuple(int(a) for a in v)
    if len(t) > len(sample) or any(a < 1 for a in t):
        raise OptionError(
            f"{what} must be a positive int or a tuple of at most {len(sample)} positive ints "
            f"(for samples of shape {sample}), got {v!r}"
        )
    return tuple(sample[: len(sample) - len(t)]) + t


def occlusion_windows(
    sample: tuple[int, ...], window: Window = None, stride: Window = None
) -> tuple[tuple[int, ...], tuple[int, ...], list[np.ndarray]]:
    """Window and stride per axis, and the start offsets of the windows along each axis.

    Defaults: images (C, H, W) use 8x8 windows (or smaller for small images) spanning the
    channels with stride 4; other inputs one step along the last axis. As in Captum, the
    windows start at ``0, stride, 2 stride, ...`` until one reaches the end; the last may be
    cut by the edge.
    """
    dwin: tuple[int, ...]
    dstride: tuple[int, ...]
    if len(sample) == 3:
        side = (min(8, sample[1]), min(8, sample[2]))
        dwin = side
        dstride = (max(1, side[0] // 2), max(1, side[1] // 2))
    else:
        dwin, dstride = (1,), (1,)
    win = _spec(window, sample, "window", dwin)
    std = _spec(stride if stride is not None else (None if window is None else window), sample, "stride",
                dstride if window is None else win)
    starts = []
    for d, (n, w, s) in enumerate(zip(sample, win, std)):
        if w > n:
            raise OptionError(f"window {win} is larger than the input {sample} along axis {d + 1}")
        if w < n and s > w:
            raise OptionError(f"stride {std} is larger than the window {win} along axis {d + 1}: "
                              "elements would be skipped")
        starts.append(np.arange(math.ceil((n - w) / s) + 1) * s)
    return win, std, starts


@register(
    "occlusion", family="perturbation", display_name="Occlusion", signed=True, takes_seed=True,
    common=("background",), preferred_for={"image": 2, "text": 2, "sequence": 1},
    options=(
        Option("window", Window, None, "window shape over a sample's trailing axes (an int: the "
               "last two axes of an image, the last one otherwise); None: 8x8 for images, one "
               "step otherwise", low=1),
        Option("stride", Window, None, "step of the window; None: half the default window, or "
               "the window when one is given", low=1),
        BASELINE, MASK_ID,
    ),
)
class Occlusion(Attributor):
    """Occlusion: the target score's drop when a sliding window is replaced by a baseline.

    Parameters
    ----------
    window, stride : int or tuple of int, optional
        Window shape and step over the trailing axes of a sample (an int means the last two
        axes of an image, the last axis otherwise; axes not given span the whole sample).
        Default: 8x8 windows with stride 4 across all channels for images, one step for
        tables and token ids. ``stride`` defaults to half the default window, or to
        ``window`` when one is given.

    Call with ``baseline=`` (default zeros), ``background=`` (interventional mean over its
    rows) or ``mask_id=`` for token ids. Each element's value is the mean of
    ``f(x) - f(x with the window replaced)`` over the windows covering it (as Captum's
    ``Occlusion``); ``exp.extras["window_values"]`` holds the drop per window position.
    Zeiler & Fergus (2014).
    """

    def __init__(
        self, model: Any, *, window: Window = None, stride: Window = None, batch_size: BatchSize = "auto"
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        self.window = window
        self.stride = stride

    def _attribute(
        self, call: Call, *, baseline: BaselineSpec = None, background: Any = None,
        mask_id: int | None = None, seed: int | None = None,
    ) -> Partial:
        x = call.x
        sample = tuple(x.shape[1:])
        win, std, starts = occlusion_windows(sample, self.window, self.stride)
        one = FeatureGroups(1, ["all"], "custom", labels=torch.zeros((1, *sample), dtype=torch.long))
        game, desc = make_game(call, one, baseline=baseline, background=background, mask_id=mask_id,
                               seed=seed, batch_size=self.batch_size, name="occlusion",
                               method=self.name)
        counts = [len(s) for s in starts]
        n_win = int(np.prod(counts))
        dev = x.device
        st = [torch.as_tensor(s, device=dev) for s in starts]
        coords = [torch.arange(n, device=dev) for n in sample]
        inside = [(c.view(1, -1) >= s.view(-1, 1)) & (c.view(1, -1) < s.view(-1, 1) + w)
                  for c, s, w in zip(coords, st, win)]  # per axis: (n_d windows, size_d)
        # leading axes every window spans whole (an image's channels): the masks cover the
        # other axes only and the game broadcasts them over these
        lead = 0
        while lead < len(sample) - 1 and counts[lead] == 1 and win[lead] == sample[lead]:
            lead += 1
        plane, plane_counts = inside[lead:], tuple(counts[lead:])
        mask_dtype = x.dtype  # 0/1 in the input's dtype: the game multiplies by it as it is

        def masks(u: torch.Tensor) -> torch.Tensor:
            idx = torch.unravel_index(u, plane_counts)
            m = plane[0][idx[0]]
            for d in range(1, len(plane)):
                m = m.unsqueeze(-1) & plane[d][idx[d]].view(-1, *([1] * d), plane[d].shape[1])
            return (~m).reshape(u.shape[0], -1).to(mask_dtype)

        # every window's mask, built once per call when they are small enough
        n_plane = math.prod(p.shape[1] for p in plane)
        table = masks(torch.arange(n_win, device=dev)) if n_win * n_plane <= _TABLE_LIMIT else None

        def keep_fn(_j: torch.Tensor, u: torch.Tensor, _r: torch.Tensor) -> torch.Tensor:
            return masks(u) if table is None else table.index_select(0, u)

        rows = torch.arange(x.shape[0], device=dev)
        drops = call.outputs.to(torch.float64).unsqueeze(1) - game.evaluate(rows, n_win, keep_fn)
        values = _spread(drops.view(-1, *counts), [m.to(torch.float64) for m in inside])
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return Partial(
            values=values.to(dtype),
            extras={"window_values": drops.view(-1, *counts).cpu().numpy()},
            params={**desc, "window": list(win), "stride": list(std)},
            seed=seed,
        )


def _smooth_masks(
    cells: torch.Tensor, shift: torch.Tensor, cell: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """RISE masks (k, H, W): grids (k, 1, g, g) upsampled to ``(g + 1) * cell`` and cropped at
    the shifts (k, 2)."""
    g = cells.shape[-1]
    up = F.interpolate(cells, size=((g + 1) * cell[0], (g + 1) * cell[1]), mode="bilinear",
                       align_corners=False)[:, 0]
    rows = (shift[:, 0:1] + torch.arange(size[0], device=cells.device)).unsqueeze(2)
    cols = (shift[:, 1:2] + torch.arange(size[1], device=cells.device)).unsqueeze(1)
    return up[torch.arange(cells.shape[0], device=cells.device).view(-1, 1, 1), rows, cols]


def _spread(drops: torch.Tensor, inside: list[torch.Tensor]) -> torch.Tensor:
    """Mean drop over the windows covering each element (windows are products over axes)."""
    letters = "abcdefghij"
    k = len(inside)
    eq = "z" + letters[:k] + "," + ",".join(f"{letters[d]}{letters[d].upper()}" for d in range(k))
    eq += "->z" + letters[:k].upper()
    total = torch.einsum(eq, drops, *inside)
    count = inside[0].sum(0)
    for d in range(1, k):
        count = count.unsqueeze(-1) * inside[d].sum(0)
    return total / count.unsqueeze(0)


@register("feature_ablation", family="perturbation", display_name="Feature Ablation",
          signed=True, takes_seed=True, common=("background",), options=(GROUPS, BASELINE, MASK_ID))
class FeatureAblation(Attributor):
    """Feature ablation: the target score's drop when one feature group is replaced.

    Call with ``groups=`` (a :class:`~unveil.core.groups.FeatureGroups`; default one group
    per column for tables, 8x8 patches for images, one per token for ids), ``baseline=``
    (default zeros), ``background=`` (interventional mean over its rows) or ``mask_id=`` for
    token ids. Every element of a group gets the group's drop ``f(x) - f(x without it)``, as
    in Captum's ``FeatureAblation`` with a feature mask; ``exp.extras["group_values"]`` holds
    the (N, G) drops. Groups absent from a sample get 0 and cost no evaluation.
    """

    def _attribute(
        self, call: Call, *, groups: Any = None, baseline: BaselineSpec = None,
        background: Any = None, mask_id: int | None = None, seed: int | None = None,
    ) -> Partial:
        x = call.x
        grp = resolve_groups(groups, x)
        game, desc = make_game(call, grp, baseline=baseline, background=background, mask_id=mask_id,
                               seed=seed, batch_size=self.batch_size, name="ablation",
                               method=self.name)
        masker: Masker = game.masker
        act = masker.active()
        pair_rows, pair_groups = torch.nonzero(act, as_tuple=True)  # only groups present in a row
        drops = torch.zeros(act.shape, dtype=torch.float64, device=x.device)
        if pair_rows.numel():
            def keep_fn(j: torch.Tensor, _u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
                return masker.ablate(r, pair_groups.index_select(0, j))

            v = game.evaluate(pair_rows, 1, keep_fn)[:, 0]
            drops[pair_rows, pair_groups] = call.outputs.to(torch.float64)[pair_rows] - v
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return Partial(
            values=grp.expand(drops.cpu()).to(dtype),
            groups=grp.to_dict(),
            extras={"group_values": drops.cpu().numpy()},
            params=desc,
            seed=seed,
        )


@register(
    "rise", family="perturbation", modalities=("image",), stochastic=True, display_name="RISE",
    signed=False,
    options=(
        Option("n_samples", int, 2000, "number of random masks, shared by the batch", low=2),
        Option("grid", int, 8, "cells per side of the low-resolution binary grid", low=1),
        Option("keep_prob", float, 0.5, "probability that a cell is kept (strictly between 0 "
               "and 1)", low=0, high=1),
        BASELINE,
    ),
)
class RISE(Attributor):
    """RISE: random smooth masks weighted by the score of the masked image (Petsiuk et al., 2018).

    Parameters
    ----------
    n_samples : int
        Number of masks (default 2000), shared by all images of the batch.
    grid : int
        Cells per side of the low-resolution binary grid (default 8).
    keep_prob : float
        Probability that a cell is kept (default 0.5).

    Each grid is upsampled bilinearly to ``(grid + 1) * cell`` pixels and cropped at a random
    shift, so masks are smooth and not aligned to the grid. The map is
    ``sum_i f(x * M_i + b * (1 - M_i)) M_i / (n_samples * keep_prob)`` per pixel, the same for
    every channel; ``exp.stderr`` is its Monte Carlo standard error. Call with ``baseline=``
    (default zeros) and ``seed=``.
    """

    def __init__(
        self, model: Any, *, n_samples: int = 2000, grid: int = 8, keep_prob: float = 0.5,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if not 0 < keep_prob < 1:
            raise OptionError(f"keep_prob must be strictly between 0 and 1, got {keep_prob!r}")
        self.n_samples = int(n_samples)
        self.grid = int(grid)
        self.keep_prob = float(keep_prob)

    def _masks(
        self, seed: int, cell: tuple[int, int], size: tuple[int, int], x: torch.Tensor
    ) -> Callable[[int, int], torch.Tensor]:
        """Masks ``m0 .. m1`` (k, H, W) from counter-based streams of ``seed`` (the same for
        any chunking): grid cells kept with ``keep_prob`` and the random shift of each mask."""
        gg = self.grid * self.grid

        def masks(m0: int, m1: int) -> torch.Tensor:
            u = draws.uniform(seed, m0 * gg, m1 * gg, stream=0, piece=draws.piece_for(gg),
                              dtype=torch.float32)
            cells = (u < self.keep_prob).to(x.dtype).view(-1, 1, self.grid, self.grid)
            sh = draws.uniform(seed, 2 * m0, 2 * m1, stream=1, piece=1024, dtype=torch.float32)
            shift = (sh.view(-1, 2) * torch.tensor(cell)).long()
            return _smooth_masks(cells.to(x.device), shift.to(x.device), cell, size)

        return masks

    def _attribute(self, call: Call, *, baseline: BaselineSpec = None, seed: int | None = None) -> Partial:
        x = call.x
        if x.ndim != 4 or not x.is_floating_point():
            raise InputError(f"RISE explains images (N, C, H, W), got shape {tuple(x.shape)} {x.dtype}")
        seed_ = resolve_seed(seed)
        n, (h, w), m = x.shape[0], x.shape[2:], self.n_samples
        b = make_baseline(baseline if baseline is not None else "zeros", x, seed=seed_)
        cell = (math.ceil(h / self.grid), math.ceil(w / self.grid))
        masks = self._masks(seed_, cell, (h, w), x)
        s1 = torch.zeros(n, h, w, dtype=torch.float64, device=x.device)
        s2 = torch.zeros_like(s1)

        def run(a: int, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
            r = torch.arange(a, c, device=x.device)
            mi, i = r // n, r % n  # mask-major: a chunk needs few masks
            m0, m1 = int(mi[0]), int(mi[-1]) + 1
            mk = masks(m0, m1)  # drawn per chunk: memory does not grow with n_samples
            mm = mk[mi - mi[0]].unsqueeze(1)
            xs = x.index_select(0, i) * mm + b.index_select(0, i) * (1 - mm)
            return call.model.scores(xs, None if call.targets is None else call.targets[i]), mk, i, int(mi[0])

        def consume(a: int, c: int, res: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]) -> None:
            sc, mk, i, m0 = res
            mi = torch.arange(a, c, device=x.device) // n - m0
            contrib = sc.to(torch.float64).view(-1, 1, 1) * mk[mi].to(torch.float64)
            s1.index_add_(0, i, contrib)
            s2.index_add_(0, i, contrib**2)

        with torch.inference_mode():
            run_chunked(run, m * n, consume=consume, batch_size=self.batch_size, model=call.model,
                        key=("rise", tuple(x.shape[1:])))
        p = self.keep_prob
        mean = s1 / m
        var = (s2 / m - mean**2).clamp(min=0) * m / (m - 1)
        sal, se = mean / p, (var / m).sqrt() / p
        shape = (n, x.shape[1], h, w)
        return Partial(
            values=sal.unsqueeze(1).expand(shape).to(x.dtype),
            stderr=se.unsqueeze(1).expand(shape).to(x.dtype),
            seed=seed_,
            params={"baseline": baseline if isinstance(baseline, (str, int, float)) else
                    ("zeros" if baseline is None else "tensor")},
        )
