"""Noise wrappers around gradient methods: SmoothGrad, SmoothGrad² and VarGrad.

Noise convention: by default the noise's standard deviation is ``noise_level`` times the range
``max(x) - min(x)`` of each explained row (Smilkov et al.'s convention; 0.15 by default, the
paper recommends 10-20%). ``stdev=`` gives an absolute standard deviation instead, which is
Captum's ``NoiseTunnel(stdevs=...)`` convention (Captum's default is ``stdevs=1.0``). With
``layer=`` (and for token ids, which are attributed at the embedding) the noise is added to the
layer's activations and the range is theirs.

All ``n_samples`` noisy copies of every row are drawn up front from ``seed`` (same seed, same
answer, for any batch size) and evaluated by the inner method in auto-sized chunks.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.batching import BatchSize
from ..core.registry import get_method, register
from ..errors import OptionError
from ._base import Attributor, Call, Partial
from ._layers import NeuronSpec, Space

__all__ = ["SmoothGrad", "VarGrad", "normal_draws", "resolve_seed"]


def resolve_seed(seed: int | None) -> int:
    """``seed``, or a fresh one from torch's global generator (so it can be recorded)."""
    if seed is None:
        return int(torch.randint(0, 2**31 - 1, ()).item())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise OptionError(f"seed must be an int or None, got {seed!r}")
    return seed


def normal_draws(
    shape: tuple[int, ...], seed: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Standard normal draws from a CPU generator seeded with ``seed`` (device-independent)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).to(device)


def noise_scale(points: torch.Tensor, noise_level: float, stdev: float | None) -> torch.Tensor:
    """Per-row standard deviation (R,): absolute ``stdev``, or ``noise_level`` x row range."""
    if stdev is not None:
        return torch.full((points.shape[0],), float(stdev), dtype=points.dtype, device=points.device)
    flat = points.flatten(1)
    return noise_level * (flat.amax(dim=1) - flat.amin(dim=1))


class _NoiseTunnel(Attributor):
    _kind = "smoothgrad"

    def __init__(
        self,
        model: Any,
        *,
        inner: str = "saliency",
        n_samples: int = 16,
        noise_level: float = 0.15,
        stdev: float | None = None,
        inner_options: dict[str, Any] | None = None,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise OptionError(f"n_samples must be an int >= 2, got {n_samples!r}")
        if not noise_level >= 0 or (stdev is not None and not stdev >= 0):
            raise OptionError(
                f"noise_level and stdev must be >= 0, got noise_level={noise_level}, stdev={stdev}"
            )
        if inner in ("smoothgrad", "vargrad"):
            raise OptionError(f"inner={inner!r} would nest noise wrappers; pick a gradient method")
        self.inner = inner
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.stdev = stdev
        self.inner_options = dict(inner_options or {})

    def _make_inner(self) -> Any:
        from . import deeplift, gradient, modified_backward, path  # noqa: F401  # register them

        cls = get_method(self.inner).cls
        if not hasattr(cls, "_attribute_space"):
            raise OptionError(
                f"inner={self.inner!r} cannot be wrapped; use a gradient method: 'saliency', "
                "'input_x_gradient', 'integrated_gradients', 'guided_backprop', 'deconvnet', "
                "'deeplift'"
            )
        try:
            return cls(self.model, batch_size=self.batch_size, **self.inner_options)
        except TypeError as exc:
            raise OptionError(f"inner_options do not fit {self.inner!r}: {exc}") from None

    def _attribute(
        self,
        call: Call,
        *,
        seed: int | None = None,
        layer: str | None = None,
        neuron: NeuronSpec = None,
        **inner_kwargs: Any,
    ) -> Partial:
        inner = self._make_inner()
        seed = resolve_seed(seed)
        space = Space.of_call(call, method=self.name, batch_size=self.batch_size, layer=layer,
                              neuron=neuron)
        pts, s = space.points, self.n_samples
        sigma = noise_scale(pts, self.noise_level, self.stdev)
        eps = normal_draws((pts.shape[0] * s, *pts.shape[1:]), seed, dtype=pts.dtype,
                           device=pts.device)
        shape1 = (-1,) + (1,) * (pts.ndim - 1)
        noisy = pts.repeat_interleave(s, dim=0) + eps * sigma.repeat_interleave(s).view(shape1)
        moved = space.moved(space.rows.repeat_interleave(s), noisy)
        v = space.reduce(inner._attribute_space(moved, **inner_kwargs).values)
        result = self._aggregate(v.view(pts.shape[0], s, *v.shape[1:]))
        result.seed = seed
        return space.finish(result.add(params={"sigma": sigma.cpu().tolist()}))

    def _aggregate(self, v: torch.Tensor) -> Partial:
        s = v.shape[1]
        if self._kind == "vargrad":
            return Partial(values=v.var(dim=1, unbiased=False))
        if getattr(self, "squared", False):
            v = v * v
        return Partial(values=v.mean(dim=1), stderr=v.std(dim=1) / math.sqrt(s))


@register("smoothgrad", family="gradient", needs_gradients=True, stochastic=True)
class SmoothGrad(_NoiseTunnel):
    """SmoothGrad: the mean of a gradient method's values over noisy copies of each input.

    Smilkov et al., "SmoothGrad: removing noise by adding noise", arXiv:1706.03825, 2017.
    ``squared=True`` gives SmoothGrad² (the mean of squared values; Hooker et al., 2019).
    Equals ``captum.attr.NoiseTunnel(inner).attribute(nt_type="smoothgrad")`` given the same
    noise (Captum's ``stdevs`` is absolute: pass ``stdev=`` for its convention).

    Parameters
    ----------
    inner : str
        The wrapped method's registry name (default ``"saliency"``, i.e. the mean of
        ``|gradient|``; pass ``inner_options={"abs": False}`` for signed gradients).
    n_samples : int
        Noisy copies per row (default 16; the paper used 50).
    noise_level : float
        Noise standard deviation as a fraction of each row's value range (default 0.15).
    stdev : float, optional
        Absolute noise standard deviation (overrides ``noise_level``).
    squared : bool
        SmoothGrad² instead of SmoothGrad.
    inner_options : dict, optional
        Constructor options of the inner method (e.g. ``{"n_steps": 16}``).
    batch_size : int or "auto"
        Rows per chunk.

    Call with ``seed=`` (recorded in ``exp.seed``), ``layer=``, ``neuron=`` and the inner
    method's call options (e.g. ``baseline=``). ``exp.stderr`` is the Monte-Carlo standard
    error of the mean.
    """

    def __init__(
        self,
        model: Any,
        *,
        inner: str = "saliency",
        n_samples: int = 16,
        noise_level: float = 0.15,
        stdev: float | None = None,
        squared: bool = False,
        inner_options: dict[str, Any] | None = None,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, inner=inner, n_samples=n_samples, noise_level=noise_level,
                         stdev=stdev, inner_options=inner_options, batch_size=batch_size)
        self.squared = squared


@register("vargrad", family="gradient", needs_gradients=True, stochastic=True)
class VarGrad(_NoiseTunnel):
    """VarGrad: the variance of a gradient method's values over noisy copies of each input.

    Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to
    Parameter Values", ICLR workshop 2018. The population variance, as
    ``captum.attr.NoiseTunnel(...).attribute(nt_type="vargrad")``. Options as
    :class:`SmoothGrad` (without ``squared``).
    """

    _kind = "vargrad"
