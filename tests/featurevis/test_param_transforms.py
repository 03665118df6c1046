"""Parameterizations and per-step transforms: exactness, bounds, determinism, normalisation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from unveil.errors import OptionError
from unveil.featurevis import transforms as T
from unveil.featurevis.param import FourierParam, PixelParam, _freq_scale, make_param


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_jitter_is_an_exact_integer_shift():
    x = torch.rand(4, 3, 12, 10, generator=_gen(1))
    g = _gen(3)
    out = T.jitter(2)(x, g)
    shifts = torch.randint(-2, 3, (4, 2), generator=_gen(3))  # the same draws
    for i in range(4):
        dx, dy = int(shifts[i, 0]), int(shifts[i, 1])
        rolled = torch.roll(x[i], shifts=(dy, dx), dims=(1, 2))
        inner = (slice(None), slice(2, -2), slice(2, -2))  # away from the reflected border
        torch.testing.assert_close(out[i][inner], rolled[inner])
    assert not torch.equal(out, x)  # some image really moved


def test_identity_scale_and_rotation_change_nothing():
    x = torch.rand(2, 1, 9, 9, generator=_gen(0))
    torch.testing.assert_close(T.random_scale([1.0])(x, _gen()), x)
    torch.testing.assert_close(T.random_rotate([0.0])(x, _gen()), x)
    torch.testing.assert_close(T.Compose([T.jitter(0), T.random_rotate([0.0])])(x, _gen()), x)


def test_rotation_by_90_degrees_on_a_square_grid():
    x = torch.rand(1, 1, 8, 8, generator=_gen(0))
    out = T.random_rotate([90.0])(x, _gen())
    candidates = [torch.rot90(x, k, dims=(2, 3)) for k in (1, 3)]
    assert min(float((out - c).abs().max()) for c in candidates) < 1e-5


def test_fused_compose_equals_sequential_warps_for_integer_shifts():
    x = torch.rand(3, 2, 16, 16, generator=_gen(0))
    fused = T.Compose([T.jitter(2), T.jitter(1)], padding_mode="zeros")(x, _gen(5))
    g = _gen(5)
    j2: Any = T.jitter(2)  # a Transform whose warp matrices the test reads
    j1: Any = T.jitter(1)
    a, b = j2.matrices(3, g), j1.matrices(3, g)
    seq = T._warp(T._warp(x, a, "zeros"), b, "zeros")
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    torch.testing.assert_close(fused[inner], seq[inner])


def test_pad_and_standard_transforms_are_seeded():
    x = torch.rand(2, 3, 20, 20, generator=_gen(0))
    p = T.pad(3, value=0.25)(x, _gen())
    assert p.shape == (2, 3, 26, 26) and float(p[0, 0, 0, 0]) == 0.25
    m = T.pad(2)(x, _gen())
    torch.testing.assert_close(m[:, :, 0, 0], x.mean((2, 3)))
    st = T.standard_transforms(20)
    torch.testing.assert_close(st(x, _gen(7)), st(x, _gen(7)))
    assert not torch.allclose(st(x, _gen(7)), st(x, _gen(8)))
    assert st(x, _gen()).shape == x.shape


def test_transform_errors():
    with pytest.raises(OptionError, match="whole number of pixels"):
        T.jitter(-1)
    with pytest.raises(OptionError, match="positive scale factors"):
        T.random_scale([0.0, 1.0])
    with pytest.raises(OptionError, match="finite angles"):
        T.random_rotate([])
    with pytest.raises(OptionError, match="pad value must be"):
        T.pad(2, value="edge")
    with pytest.raises(OptionError, match="padding_mode must be"):
        T.Compose([], padding_mode="wrap")  # type: ignore[arg-type]


def test_params_stay_in_bounds_and_are_seeded():
    low = torch.tensor([-1.0, 0.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    high = low + torch.tensor([0.5, 1.0, 4.0]).view(1, 3, 1, 1)
    for cls in (PixelParam, FourierParam):
        p = cls((2, 3, 8, 8), low, high, generator=_gen(0), sd=50.0)  # huge init: saturates
        img = p()
        assert bool((img >= low).all()) and bool((img <= high).all())
        q = cls((2, 3, 8, 8), low, high, generator=_gen(0), sd=50.0)
        torch.testing.assert_close(q(), img)


def test_fourier_scale_matches_the_pixel_first_step_on_white_gradients():
    # Adam's first step moves every free parameter by lr * sign(grad); the normalisation makes
    # the resulting first-order gain equal the pixel parameterization's for white gradients.
    g = _gen(0)
    for h, w in ((16, 16), (15, 17), (32, 24)):
        s = _freq_scale(h, w, 1.0)
        gain_f, gain_p = 0.0, 0.0
        for _ in range(40):
            grad_img = torch.randn(h, w, generator=g, dtype=torch.float64)
            spec = torch.zeros(h, w // 2 + 1, 2, dtype=torch.float64, requires_grad=True)
            img = torch.fft.irfft2(torch.view_as_complex(spec * s[..., None]), s=(h, w), norm="ortho")
            (gs,) = torch.autograd.grad((img * grad_img).sum(), spec)
            gain_f += float(gs.abs().sum())
            gain_p += float(grad_img.abs().sum())
        assert abs(gain_f / gain_p - 1.0) < 0.03
        assert float(s[0, 0]) > 5 * float(s[h // 2, -1])  # low frequencies are boosted


def test_make_param_choices_and_errors():
    lo, hi = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert isinstance(make_param("auto", (1, 3, 8, 8), lo, hi, generator=_gen()), FourierParam)
    assert make_param("auto", (1, 3, 8, 8), lo, hi, generator=_gen()).decorrelate
    assert isinstance(make_param("auto", (1, 5), lo[:, 0, 0, :5], hi[:, 0, 0, :5], generator=_gen()), PixelParam)
    with pytest.raises(OptionError, match="param='fourier' needs images"):
        make_param("fourier", (1, 5), lo, hi, generator=_gen())
    with pytest.raises(OptionError, match="needs \\(N, 3, H, W\\)"):
        make_param("fourier", (1, 1, 8, 8), lo, hi, generator=_gen(), decorrelate=True)
    with pytest.raises(OptionError, match="param must be"):
        make_param("cppn", (1, 3, 8, 8), lo, hi, generator=_gen())  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="decay_power"):
        make_param("fourier", (1, 3, 8, 8), lo, hi, generator=_gen(), decay_power=-1.0)
