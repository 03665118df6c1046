"""Random per-step transformations that make feature visualizations robust.

Olah, Mordvintsev & Schubert (2017) "Feature Visualization" (Distill, "Transformation
robustness") jitter, scale and rotate the image a little at every optimisation step, so that the
result must activate the unit under all of them and high-frequency adversarial patterns do not
survive. Here each transform draws its random parameters independently **per image** from a
seeded ``torch.Generator`` (so runs are deterministic under ``seed``), and consecutive geometric
transforms are fused into one affine warp: one ``grid_sample`` per step for the whole batch,
with the output the same size as the input. :func:`pad` enlarges the canvas first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Union

import torch
import torch.nn.functional as F

from ..errors import OptionError

__all__ = [
    "Compose",
    "Transform",
    "jitter",
    "pad",
    "random_rotate",
    "random_scale",
    "standard_transforms",
]

PaddingMode = Literal["reflection", "border", "zeros"]


class Transform:
    """A random map of a batch of images ``(N, C, H, W)``; draws come from ``generator``."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class _Affine(Transform):
    """A random affine warp; :meth:`matrices` maps output to input pixel coordinates."""

    def matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 3, 3) float64 maps from centred output pixel coordinates (x, y) to the input's."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _warp(x, self.matrices(x.shape[0], generator), "reflection")


def _choice(values: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return values[torch.randint(len(values), (n,), generator=generator)]


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


class _Jitter(_Affine):
    def __init__(self, d: int) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise OptionError(f"jitter needs a whole number of pixels >= 0, got {d!r}")
        self.d = d

    def matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        t = torch.randint(-self.d, self.d + 1, (n, 2), generator=generator).double()
        m = _eye(n)
        m[:, :2, 2] = -t  # the image moves by +t
        return m

    def __repr__(self) -> str:
        return f"jitter({self.d})"


class _Scale(_Affine):
    def __init__(self, scales: Sequence[float]) -> None:
        s = torch.as_tensor(list(scales), dtype=torch.float64)
        if s.numel() == 0 or bool((s <= 0).any()):
            raise OptionError(f"random_scale needs positive scale factors, got {scales!r}")
        self.scales = s

    def matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        s = _choice(self.scales, n, generator)
        m = _eye(n)
        m[:, 0, 0] = 1.0 / s
        m[:, 1, 1] = 1.0 / s
        return m

    def __repr__(self) -> str:
        return f"random_scale({len(self.scales)} factors)"


class _Rotate(_Affine):
    def __init__(self, degrees: Sequence[float]) -> None:
        a = torch.as_tensor(list(degrees), dtype=torch.float64)
        if a.numel() == 0 or not bool(torch.isfinite(a).all()):
            raise OptionError(f"random_rotate needs finite angles in degrees, got {degrees!r}")
        self.angles = a * math.pi / 180.0

    def matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        a = -_choice(self.angles, n, generator)  # inverse map rotates back
        m = _eye(n)
        m[:, 0, 0], m[:, 0, 1] = torch.cos(a), -torch.sin(a)
        m[:, 1, 0], m[:, 1, 1] = torch.sin(a), torch.cos(a)
        return m

    def __repr__(self) -> str:
        return f"random_rotate({len(self.angles)} angles)"


class _Pad(Transform):
    def __init__(self, width: int, value: float | str) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 0:
            raise OptionError(f"pad width must be a whole number >= 0, got {width!r}")
        if isinstance(value, str) and value not in ("mean", "reflect", "replicate"):
            raise OptionError(f"pad value must be a number, 'mean', 'reflect' or 'replicate', got {value!r}")
        self.width, self.value = width, value

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        w = self.width
        if w == 0:
            return x
        if self.value in ("reflect", "replicate"):
            return F.pad(x, [w] * 4, mode=str(self.value))
        if self.value == "mean":
            mean = x.mean(dim=(2, 3), keepdim=True)
            return F.pad(x - mean, [w] * 4) + mean
        return F.pad(x, [w] * 4, value=float(self.value))

    def __repr__(self) -> str:
        return f"pad({self.width}, {self.value!r})"


def _warp(x: torch.Tensor, m: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Resample ``x`` at ``m @ p`` for every output pixel ``p`` (centred pixel coordinates)."""
    n, _, h, w = x.shape
    s = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0], dtype=torch.float64))
    s_inv = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], dtype=torch.float64))
    theta = (s_inv @ m @ s)[:, :2, :].to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


class Compose(Transform):
    """Apply transforms in order; consecutive geometric ones become a single affine warp.

    ``padding_mode`` fills what a warp moves in from outside the canvas: ``"reflection"``
    (default), ``"border"`` or ``"zeros"``.
    """

    def __init__(self, transforms: Sequence[Transform], *, padding_mode: PaddingMode = "reflection") -> None:
        if padding_mode not in ("reflection", "border", "zeros"):
            raise OptionError(f"padding_mode must be 'reflection', 'border' or 'zeros', got {padding_mode!r}")
        for t in transforms:
            if not callable(t):
                raise OptionError(f"transforms must be callables (x, generator) -> x, got {t!r}")
        self.transforms = list(transforms)
        self.padding_mode = padding_mode

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        m: torch.Tensor | None = None
        for t in self.transforms:
            if isinstance(t, _Affine):
                step = t.matrices(x.shape[0], generator)
                m = step if m is None else m @ step
                continue
            if m is not None:
                x, m = _warp(x, m, self.padding_mode), None
            x = t(x, generator)
        return x if m is None else _warp(x, m, self.padding_mode)

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def jitter(d: int) -> Transform:
    """Shift each image by a random whole number of pixels in ``[-d, d]`` along each axis."""
    return _Jitter(d)


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom each image about its centre by a factor drawn from ``scales``."""
    return _Scale(scales)


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate each image about its centre by an angle (degrees) drawn from ``degrees``."""
    return _Rotate(degrees)


def pad(width: int, value: Union[float, str] = "mean") -> Transform:
    """Pad each side by ``width`` pixels with a number, each image's channel ``"mean"``,
    ``"reflect"`` or ``"replicate"``."""
    return _Pad(width, value)


def standard_transforms(size: int) -> Compose:
    """Jitter, scale (±10 %), rotate (±10°) and jitter again, scaled to the image ``size``.

    Fused into one warp per step; the transformed image keeps the parameter's size.
    """
    j = max(1, round(size / 16))
    return Compose([
        jitter(j),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate([float(a) for a in range(-10, 11)]),
        jitter(max(1, j // 2)),
    ])
