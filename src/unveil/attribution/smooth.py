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

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, Union

import torch

from ..core.baselines import BaselineSpec
from ..core.batching import BatchSize
from ..core.options import Option
from ..core.registry import get_method, register
from ..errors import OptionError
from ._base import Attributor, Call, Partial
from ._layers import NeuronSpec, Space
from ._options import BASELINE, SPACE

__all__ = ["NOISE_LEVEL", "STDEV", "SmoothGrad", "VarGrad", "normal_draws", "resolve_seed"]

#: The gradient methods a noise wrapper may wrap (those that attribute in a given space).
WRAPPABLE = ("saliency", "input_x_gradient", "integrated_gradients", "guided_backprop",
             "deconvnet", "deeplift")

NOISE_LEVEL = Option("noise_level", float, 0.15, "noise standard deviation as a fraction of "
                     "each row's value range max(x) - min(x)", low=0)
STDEV = Option("stdev", Union[float, None], None, "absolute noise standard deviation "
               "(overrides noise_level)", low=0)
_TUNNEL = (
    Option("inner", Literal[WRAPPABLE], "saliency", "the wrapped gradient method's registry name"),
    Option("n_samples", int, 16, "noisy copies per row", low=2),
    NOISE_LEVEL, STDEV,
    Option("inner_options", Union[Mapping[str, Any], None], None,
           "constructor options of the inner method, e.g. {'n_steps': 16}"),
    dataclasses.replace(BASELINE, meaning="the inner method's baseline= (integrated_gradients, "
                        "deeplift)"),
    *SPACE,
)


def resolve_seed(seed: int | None) -> int:
    """``seed``, or a fresh one from torch's global generator (so it can be recorded)."""
    if seed is None:
        return int(torch.randint(0, 2**31 - 1, ()).item())
    return int(seed)


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
        inner_options: Mapping[str, Any] | None = None,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        wraps = get_method(self.name).wraps
        if inner not in wraps:
            raise OptionError(f"{self.name!r} cannot wrap inner={inner!r}; it wraps "
                              f"{', '.join(map(repr, wraps))}")
        self.inner = inner
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.stdev = stdev
        self.inner_options = dict(inner_options or {})
        options = get_method(inner).options
        try:
            options.check(self.inner_options)
        except OptionError as exc:
            raise OptionError(f"inner_options do not fit {inner!r}: {exc}") from None
        misplaced = sorted(k for k in self.inner_options
                           if options[k].where != "init" or k == "batch_size")
        if misplaced:
            raise OptionError(f"inner_options do not fit {inner!r}: {', '.join(misplaced)} "
                              f"{'is' if len(misplaced) == 1 else 'are'} not for its constructor "
                              "(the wrapper passes batch_size; call options go to the call)")

    def _make_inner(self) -> Any:
        return get_method(self.inner).cls(self.model, batch_size=self.batch_size,
                                          **self.inner_options)

    def _attribute(
        self,
        call: Call,
        *,
        seed: int | None = None,
        layer: str | None = None,
        neuron: NeuronSpec = None,
        baseline: BaselineSpec = None,
        background: Any = None,
    ) -> Partial:
        inner_kwargs = {k: v for k, v in (("baseline", baseline), ("background", background))
                        if v is not None}
        takes = get_method(self.inner).options.names("call")
        refused = sorted(k for k in inner_kwargs if k not in takes)
        if refused:
            raise OptionError(f"{self.name!r}: inner={self.inner!r} takes no "
                              f"{'= or '.join(refused)}=")
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


@register("smoothgrad", family="gradient", needs_gradients=True, stochastic=True,
          display_name="SmoothGrad", signed=True, common=("background",), wraps=WRAPPABLE,
          options=(*_TUNNEL, Option("squared", bool, False, "SmoothGrad² (the mean of squared "
                                    "values) instead of SmoothGrad")))
class SmoothGrad(_NoiseTunnel):
    """SmoothGrad: the mean of a gradient method's values over noisy copies of each input.

    Smilkov et al., "SmoothGrad: removing noise by adding noise", arXiv:1706.03825, 2017.
    ``squared=True`` gives SmoothGrad² (the mean of squared values; Hooker et al., 2019).
    Equals ``captum.attr.NoiseTunnel(inner).attribute(nt_type="smoothgrad")`` given the same
    noise (Captum's ``stdevs`` is absolute: pass ``stdev=`` for its convention).

    Parameters
    ----------
    inner : str
        The wrapped method's registry name, one of the declaration's ``wraps`` (``saliency``,
        ``input_x_gradient``, ``integrated_gradients``, ``guided_backprop``, ``deconvnet``,
        ``deeplift``); default ``"saliency"``, i.e. the mean of ``|gradient|`` (pass
        ``inner_options={"abs": False}`` for signed gradients).
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

    Call with ``seed=`` (recorded in ``exp.seed``), ``layer=``, ``neuron=``, and ``baseline=``
    or ``background=`` for an inner method that takes them (``integrated_gradients``,
    ``deeplift``). ``exp.stderr`` is the Monte-Carlo standard error of the mean.
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
        inner_options: Mapping[str, Any] | None = None,
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, inner=inner, n_samples=n_samples, noise_level=noise_level,
                         stdev=stdev, inner_options=inner_options, batch_size=batch_size)
        self.squared = squared


@register("vargrad", family="gradient", needs_gradients=True, stochastic=True,
          display_name="VarGrad", signed=False, common=("background",), wraps=WRAPPABLE,
          options=_TUNNEL)
class VarGrad(_NoiseTunnel):
    """VarGrad: the variance of a gradient method's values over noisy copies of each input.

    Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to
    Parameter Values", ICLR workshop 2018. The population variance, as
    ``captum.attr.NoiseTunnel(...).attribute(nt_type="vargrad")``. Options as
    :class:`SmoothGrad` (without ``squared``).
    """

    _kind = "vargrad"
