"""Where a class activation map lives: target layers, spatial grids, token grids, resizing.

A CAM needs a layer whose output is laid out over the input's space. Convolutional layers give
``(N, C, h, w)`` maps (``(N, C, l)`` for 1-D signals). Vision transformers give token sequences
``(N, T, D)`` (or ``(T, N, D)``); the grid is found from the token count: the last ``h * w``
tokens, with ``h / w`` equal to the input's aspect ratio, are the patches, and the leading
tokens (a class token, distillation or register tokens) are set aside. No reshape function is
needed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.hooks import forward_hooks
from ..core.model import Model
from ..errors import InputError, LayerNotFoundError, ModelError

__all__ = [
    "Capture",
    "preferred_format",
    "Grid",
    "capture_layer",
    "default_layer",
    "find_grid",
    "normalize_maps",
    "to_maps",
    "upsample",
]

_MAX_PREFIX = 8  # leading non-patch tokens considered (class, distillation, registers)


@dataclass(frozen=True)
class Grid:
    """How a layer's output tensor maps onto a spatial grid over the input.

    ``kind`` is ``"map"`` (``(N, C, *size)``), or ``"tokens"`` (``(N, T, D)`` when
    ``batch_first`` else ``(T, N, D)``, whose last ``prod(size)`` tokens are the grid and whose
    first ``prefix`` tokens are not).
    """

    kind: Literal["map", "tokens"]
    size: tuple[int, ...]
    prefix: int = 0
    batch_first: bool = True

    def describe(self) -> dict[str, Any]:
        """JSON facts for ``exp.meta``."""
        return {"kind": self.kind, "size": list(self.size), "prefix_tokens": self.prefix}


def _token_grid(t: int, in_size: tuple[int, ...]) -> tuple[tuple[int, ...], int] | None:
    """``(grid size, prefix)`` for ``t`` tokens over an input of spatial size ``in_size``."""
    for prefix in range(0, min(_MAX_PREFIX, t - 2) + 1):
        n = t - prefix
        if len(in_size) == 1:
            return (n,), prefix
        hh, ww = in_size
        # h * w = n and h / w = hh / ww  =>  h = sqrt(n * hh / ww)
        h = round(math.sqrt(n * hh / ww))
        if h > 0 and n % h == 0 and h * ww == (n // h) * hh and n > 1:
            return (h, n // h), prefix
    return None


def find_grid(shape: tuple[int, ...], n: int, x_shape: tuple[int, ...]) -> Grid | None:
    """The grid of a layer output of ``shape`` for inputs of ``x_shape`` (batch ``n``), or None."""
    in_spatial = tuple(x_shape[2:])
    if len(in_spatial) not in (1, 2):
        return None
    if len(shape) == 2 + len(in_spatial) and shape[0] == n:
        size = tuple(shape[2:])
        return Grid("map", size) if math.prod(size) > 1 else None
    if len(in_spatial) == 2 and len(shape) == 3:
        if shape[0] == n:
            batch_first = True
        elif shape[1] == n:
            batch_first = False
        else:
            return None
        t = shape[1] if batch_first else shape[0]
        found = _token_grid(t, in_spatial)
        if found is None:
            return None
        return Grid("tokens", found[0], prefix=found[1], batch_first=batch_first)
    return None


def to_maps(t: torch.Tensor, grid: Grid) -> torch.Tensor:
    """A layer output (or its gradient) as channel maps ``(N, C, *grid.size)``."""
    if grid.kind == "map":
        return t
    if not grid.batch_first:
        t = t.transpose(0, 1)
    patches = t[:, grid.prefix:, :]
    return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid.size)


def from_maps(maps: torch.Tensor, like: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Inverse of :func:`to_maps`: write channel maps back into a layer output ``like``."""
    if grid.kind == "map":
        return maps
    out = like if grid.batch_first else like.transpose(0, 1)
    out = out.clone()
    out[:, grid.prefix:, :] = maps.reshape(maps.shape[0], maps.shape[1], -1).transpose(1, 2)
    return out if grid.batch_first else out.transpose(0, 1)


def upsample(maps: torch.Tensor, size: tuple[int, ...], *, align_corners: bool = False) -> torch.Tensor:
    """Resize ``(N, K, *s)`` maps to ``size`` (bilinear for 2-D, linear for 1-D)."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    mode = "bilinear" if len(size) == 2 else "linear"
    return F.interpolate(maps, size=size, mode=mode, align_corners=align_corners)


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-row min-max scaling to [0, 1]; a constant row becomes all zeros.

    No epsilon is added to the range, so the result does not depend on the map's scale
    (pytorch-grad-cam adds ``1e-7``, which matters for maps whose values are small).
    """
    flat = maps.reshape(maps.shape[0], -1)
    shifted = flat - flat.min(dim=1, keepdim=True).values
    hi = shifted.max(dim=1, keepdim=True).values
    scaled = shifted / torch.where(hi > 0, hi, torch.ones_like(hi))
    return scaled.reshape(maps.shape)


@dataclass
class Capture:
    """The output of one layer during one forward pass."""

    name: str
    output: torch.Tensor | None = None
    calls: int = 0


@contextlib.contextmanager
def capture_layer(module: nn.Module, name: str, *, grad: bool) -> Iterator[Capture]:
    """Record ``module``'s output; with ``grad=True`` the output can be differentiated.

    The model continues with a copy of the output, so in-place operations after the layer
    (``ReLU(inplace=True)``) cannot alter the recorded activations. When nothing before the
    layer needs gradients, the output is made a leaf that does, so no graph is built below it.
    """
    cap = Capture(name)

    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"layer {name!r} returned {type(out).__name__}, not a tensor; pick a layer whose "
                "output is a feature map or token sequence"
            )
        cap.calls += 1
        if grad and not out.requires_grad and out.is_floating_point():
            out = out.detach().requires_grad_(True)
        cap.output = out
        return out.clone()

    with forward_hooks([(module, hook)]):
        yield cap
    if cap.calls > 1:
        raise ModelError(
            f"layer {name!r} runs {cap.calls} times in one forward pass (a shared module); a CAM "
            "needs a layer that runs once: pass layer= another one"
        )
    if cap.calls == 0:
        raise ModelError(f"layer {name!r} did not run in the forward pass; pass layer= another one")


def default_layer(module: nn.Module, x1: torch.Tensor) -> tuple[str, Grid]:
    """The last layer, in execution order, whose Grad-CAM maps are informative on ``x1``.

    Candidates are layers with a spatial output the top score depends on (for token outputs only
    normalisation layers: in a vision transformer the last block's first norm, since after its
    attention patch tokens no longer reach a class token). A late pooling or post-ReLU layer
    often gives all-zero maps — its few non-zero gradients point against the positive channels
    — so each candidate's Grad-CAM map ``relu(sum_c mean(grad_c) * A_c)`` is computed on the
    rows of ``x1`` (a few rows of the batch), and the last layer where no row's map is all zero
    or constant wins; if none, the one with the fewest such rows (for token grids: the last
    norm with a non-zero gradient). One forward and one backward pass on ``x1``.
    """
    names = {id(m): n for n, m in module.named_modules() if n}
    seen: list[tuple[str, torch.Tensor, Grid]] = []
    counts: dict[str, int] = {}

    def hook(m: nn.Module, _i: Any, out: Any) -> None:
        name = names[id(m)]
        counts[name] = counts.get(name, 0) + 1
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad:
            grid = find_grid(tuple(out.shape), x1.shape[0], tuple(x1.shape))
            if grid is not None and (grid.kind == "map" or _is_norm(m)):
                seen.append((name, out, grid))

    mods = [(m, hook) for m in module.modules() if id(m) in names]
    xg = x1.detach().requires_grad_(x1.is_floating_point())
    with torch.enable_grad(), forward_hooks(mods):
        out = Model(module).forward(xg)
    seen = [s for s in seen if counts[s[0]] == 1]
    if not seen:
        raise LayerNotFoundError(
            f"found no layer with a spatial output for inputs of shape {tuple(x1.shape[1:])}: a "
            "CAM needs a convolutional feature map (N, C, h, w) or a grid of tokens; pass layer="
        )
    score = out.sum() if out.ndim == 1 else out.max(dim=1).values.sum()
    grads = torch.autograd.grad(score, [s[1] for s in seen], allow_unused=True)
    best: tuple[int, str, Grid] | None = None
    tokens = any(grid.kind == "tokens" for _, _, grid in seen)
    for (name, act, grid), g in zip(reversed(seen), reversed(grads)):
        if g is None:
            continue
        if tokens:  # a transformer: the last norm with a gradient (see above)
            if bool(to_maps(g, grid).ne(0).any()):
                return name, grid
            continue
        flat_rows = degenerate_cam_rows(to_maps(act.detach(), grid), to_maps(g, grid))
        if flat_rows == 0:
            return name, grid
        if best is None or flat_rows < best[0]:
            best = (flat_rows, name, grid)
    if best is not None:
        return best[1], best[2]
    name, _, grid = seen[-1]
    return name, grid


def degenerate_cam_rows(act: torch.Tensor, grad: torch.Tensor) -> int:
    """How many rows of Grad-CAM ``relu(sum_c mean(grad_c) A_c)`` are constant (e.g. all zero)."""
    weights = grad.flatten(2).mean(dim=2)
    cam = torch.relu((act.flatten(2) * weights[:, :, None]).sum(dim=1))
    spread = cam.amax(dim=1) - cam.amin(dim=1)
    scale = act.flatten(1).abs().amax(dim=1) * weights.abs().amax(dim=1)
    return int((spread <= 1e-6 * scale.clamp_min(1e-30)).sum())


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or "norm" in type(m).__name__.lower()


def preferred_format(module: nn.Module, x: torch.Tensor) -> torch.memory_format:
    """Channels-last for 2-D convolutional models on the CPU, where oneDNN runs convolutions
    1.5-3x faster in that layout — if the model accepts it (``x.view(n, -1)`` on a spatial
    map does not), which one row under ``no_grad`` tells. Else contiguous. Results agree up to
    float rounding."""
    if x.ndim != 4 or x.device.type != "cpu" or not any(
        isinstance(m, nn.Conv2d) for m in module.modules()
    ):
        return torch.contiguous_format
    try:
        with torch.no_grad():
            module(x[:1].contiguous(memory_format=torch.channels_last))
    except Exception:
        return torch.contiguous_format
    return torch.channels_last


def check_input(x: torch.Tensor, name: str) -> None:
    """CAMs explain images ``(N, C, H, W)`` and 1-D signals ``(N, C, L)``."""
    if x.ndim not in (3, 4) or not x.is_floating_point():
        raise InputError(
            f"{name!r} explains images (N, C, H, W) or 1-D signals (N, C, L) of floats; got "
            f"{x.dtype} inputs of shape {tuple(x.shape)}. For tables use a gradient or "
            "perturbation method; for token ids an attention method"
        )
