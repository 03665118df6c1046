"""How the optimised input is parameterised: raw values, or a scaled Fourier spectrum.

Both map free parameters through a sigmoid into the box ``[low, high]`` (per element, so the
bounds may be per feature), which keeps every step inside the valid input range.

The Fourier parameterization (Olah, Mordvintsev & Schubert 2017, "Feature Visualization",
Distill, section "Preconditioning and parameterization") optimises the image's 2-D spectrum with
each frequency scaled by ``1 / f ** decay_power``, so low frequencies move faster than high
ones, and for 3-channel images mixes colours through a fixed decorrelating matrix (the square
root of ImageNet's colour covariance published with Lucid). The spectrum scale is normalised so
that an Adam step of size ``lr`` changes pixels by about as much as in the pixel
parameterization, which makes the two directly comparable at one learning rate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..errors import OptionError

__all__ = ["FourierParam", "Param", "PixelParam", "make_param"]

# sqrt of ImageNet's RGB covariance (Lucid's color_correlation_svd_sqrt). Scaled, like the
# spectrum, so that a sign step on every decorrelated channel raises the objective as fast as
# one on every RGB channel when the gradient is white: the column norms sum to 3.
_COLOR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
_COLOR = _COLOR_SQRT * (3.0 / float(_COLOR_SQRT.norm(dim=0).sum()))


class Param:
    """Base: free tensors in :attr:`params`, ``param()`` gives the input in ``[low, high]``."""

    params: list[torch.Tensor]

    def __init__(self, low: torch.Tensor, high: torch.Tensor, decorrelate: bool) -> None:
        self.low = low
        self.span = high - low
        self.decorrelate = decorrelate

    def _raw(self) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        z = self._raw()
        if self.decorrelate:
            m = _COLOR.to(device=z.device, dtype=z.dtype)
            z = torch.einsum("nchw,dc->ndhw", z, m)
        return self.low + self.span * torch.sigmoid(z)


class PixelParam(Param):
    """Each input value is ``low + (high - low) * sigmoid(z)`` for a free ``z``."""

    def __init__(
        self,
        shape: tuple[int, ...],
        low: torch.Tensor,
        high: torch.Tensor,
        *,
        generator: torch.Generator,
        sd: float = 0.01,
        decorrelate: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(low, high, decorrelate)
        z = torch.randn(shape, generator=generator, dtype=torch.float32) * sd
        self.z = z.to(device=device, dtype=dtype).requires_grad_(True)
        self.params = [self.z]

    def _raw(self) -> torch.Tensor:
        return self.z


def _freq_scale(h: int, w: int, decay_power: float) -> torch.Tensor:
    """``1 / max(f, 1/max(h, w)) ** decay_power`` on the rfft grid, normalised (see below).

    The normalisation makes Adam's first step (a step of ``lr`` on every free parameter, in
    the direction of its gradient's sign) raise the objective as fast as in the pixel
    parameterization when the gradient is white noise: with an orthonormal inverse FFT, a
    coefficient that has a mirrored twin has real and imaginary gradients of ``sqrt(2)`` times
    the pixel gradient's spread, a self-conjugate one (zero and Nyquist frequencies) a real
    gradient of the same spread and none on its imaginary part.
    """
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    f = torch.sqrt(fx * fx + fy * fy).clamp_min(1.0 / max(h, w))
    s = f.pow(-decay_power)
    twin = torch.ones_like(s, dtype=torch.bool)
    cols = [0] + ([w // 2] if w % 2 == 0 else [])
    rows = [0] + ([h // 2] if h % 2 == 0 else [])
    for c in cols:
        twin[:, c] = False
        for r in range(h):  # in these columns, row r pairs with row -r
            twin[r, c] = r not in rows and (-r) % h > r
    # self-conjugate entries, plus the redundant half of those columns, count once or not at all
    gain = torch.where(twin, 2.0 * 2.0**0.5, 0.0)
    for c in cols:
        for r in rows:
            gain[r, c] = 1.0
    return s * (h * w) / float((gain * s).sum())


class FourierParam(Param):
    """The image is the inverse real FFT of a free spectrum scaled by ``1 / f ** decay_power``."""

    def __init__(
        self,
        shape: tuple[int, ...],
        low: torch.Tensor,
        high: torch.Tensor,
        *,
        generator: torch.Generator,
        sd: float = 0.01,
        decorrelate: bool = True,
        decay_power: float = 1.0,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(low, high, decorrelate)
        n, c, h, w = shape
        self.size = (h, w)
        spec = torch.randn((n, c, h, w // 2 + 1, 2), generator=generator, dtype=torch.float32) * sd
        self.spectrum = spec.to(device=device, dtype=dtype).requires_grad_(True)
        self.scale = _freq_scale(h, w, decay_power).to(device=device, dtype=dtype)[..., None]
        self.params = [self.spectrum]

    def _raw(self) -> torch.Tensor:
        spec = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        img: torch.Tensor = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        return img


def make_param(
    kind: Literal["auto", "fourier", "pixel"],
    shape: tuple[int, ...],
    low: torch.Tensor,
    high: torch.Tensor,
    *,
    generator: torch.Generator,
    decorrelate: bool | None = None,
    decay_power: float = 1.0,
    sd: float = 0.01,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Param:
    """Build a parameterization; ``"auto"`` is Fourier for images (N, C, H, W), else pixel."""
    image = len(shape) == 4
    if kind == "auto":
        kind = "fourier" if image else "pixel"
    if kind not in ("fourier", "pixel"):
        raise OptionError(f"param must be 'fourier', 'pixel' or 'auto', got {kind!r}")
    if decorrelate and not (image and shape[1] == 3):
        raise OptionError(
            f"decorrelate=True mixes RGB colours and needs (N, 3, H, W) inputs, got {shape}"
        )
    if not math.isfinite(decay_power) or decay_power < 0:
        raise OptionError(f"decay_power must be a finite number >= 0, got {decay_power}")
    common = dict(generator=generator, sd=sd, device=device, dtype=dtype)
    if kind == "fourier":
        if not image:
            raise OptionError(
                f"param='fourier' needs images (N, C, H, W), got shape {shape}; use param='pixel'"
            )
        dec = shape[1] == 3 if decorrelate is None else decorrelate
        return FourierParam(
            shape, low, high, decorrelate=dec, decay_power=decay_power, **common  # type: ignore[arg-type]  # dict of mixed kwargs
        )
    return PixelParam(shape, low, high, decorrelate=bool(decorrelate), **common)  # type: ignore[arg-type]  # dict of mixed kwargs
