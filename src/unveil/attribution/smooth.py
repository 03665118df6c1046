"""Noise wrappers around gradient methods: SmoothGrad, SmoothGrad² and VarGrad.

Noise convention: by default the noise's standard deviation is ``noise_level`` times the range
``max(x) - min(x)`` of each explained row (Smilkov et al.'s convention; 0.15 by default, the
paper recommends 10-20%). ``stdev=`` gives an absolute standard deviation instead, which is
Captum's ``NoiseTunnel(stdevs=...)`` convention (Captum's default is ``stdevs=1.0``). With
``layer=`` (and for token ids, which are attributed at the embedding) the noise is added to the
layer's activations and the range is theirs.

The noisy copies are made and evaluated in blocks of (row, sample) pairs sized by the memory
budget (:func:`unveil.core.batching.block_size`), so memory stays bounded for any ``n_samples``;
a block holds whole rows (all their samples) or a part of one row, so its noise, its noisy
copies and its moments are batched tensor operations broadcast over the samples (no per-sample
gathers). The inner method evaluates a block in chunks of the automatically learnt size, like
any other batch. Each block's noise is built in one batched operation from a counter-based stream
(:mod:`unveil.core.draws`: draw ``i`` of the stream is the same whichever block asks for it), so
the same seed gives the same answer for any batch size or memory budget. Each row's mean and
variance are merged block by block in float64 (Chan et al.'s pairwise update of Welford's
algorithm).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union

import torch

from ..core import draws
from ..core.baselines import BaselineSpec
from ..core.batching import BatchSize, block_size, chunks, progress
from ..core.draws import resolve_seed
from ..core.options import Option
from ..core.registry import get_method, register
from ..errors import OptionError
from ._base import Attributor, Call, Partial
from ._layers import NeuronSpec, Space
from ._options import BASELINE, SPACE

__all__ = ["NOISE_LEVEL", "STDEV", "SmoothGrad", "VarGrad", "normal_draws"]

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


def normal_draws(
    shape: tuple[int, ...], seed: int, *, dtype: torch.dtype, device: torch.device, start: int = 0
) -> torch.Tensor:
    """Standard normal draws shaped ``shape``: draws ``start ..`` of the noise stream of ``seed``
    (:func:`unveil.core.draws.normal`; device-independent). The noise of (row ``i``, sample
    ``j``) of a call with ``S`` samples and ``D`` values per row is draws
    ``(i * S + j) * D .. + D``, in pieces of :func:`~unveil.core.draws.piece_for` ``(D)``."""
    n, piece = math.prod(shape), draws.piece_for(math.prod(shape[1:]))
    return draws.normal(seed, start, start + n, piece=piece, dtype=dtype,
                        device=device).view(shape)


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
        squared = bool(getattr(self, "squared", False))
        d, n = pts[0].numel(), pts.shape[0] * s  # values per row; (row, sample) pairs
        # per pair: the noise and noisy copy, the inner method's points and values (and their
        # concatenation), the values in float64 and their deviations
        per_pair = d * (6 * pts.element_size() + 16)
        size = block_size(per_pair, n, what=f"{self.name}: one noisy copy of a row",
                          batch_size=self.batch_size)
        moments: _Moments | None = None
        n_blocks = -(-n // (size - size % s)) if size >= s else pts.shape[0] * -(-s // size)
        for a, b in progress(_row_blocks(pts.shape[0], s, size), total=n_blocks, desc=self.name):
            lo, g = a // s, min(b - a, s)  # the block: rows lo .. hi, g samples of each
            hi = lo + (b - a) // g
            eps = normal_draws((b - a, *pts.shape[1:]), seed, dtype=pts.dtype, device=pts.device,
                               start=a * d)
            # one batched op per block, broadcast over each row's samples (no gathered copies)
            noisy = eps.view(hi - lo, g, *pts.shape[1:])
            noisy.mul_(sigma[lo:hi].view(-1, *(1,) * pts.ndim)).add_(pts[lo:hi].unsqueeze(1))
            moved = space.moved(space.rows[lo:hi].repeat_interleave(g), eps)
            del eps, noisy
            v = space.reduce(inner._attribute_space(moved, **inner_kwargs).values)
            del moved
            if squared:
                v = v * v
            if moments is None:
                moments = _Moments(pts.shape[0], tuple(v.shape[1:]), v.device)
            moments.add(lo, v.reshape(hi - lo, g, *v.shape[1:]))
        assert moments is not None
        result = self._aggregate(moments, s, pts.dtype)
        result.seed = seed
        return space.finish(result.add(params={"sigma": sigma.cpu().tolist()}))

    def _aggregate(self, m: _Moments, s: int, dtype: torch.dtype) -> Partial:
        if self._kind == "vargrad":
            return Partial(values=(m.m2 / s).to(dtype))  # the population variance
        stderr = (m.m2 / (s - 1)).sqrt_() / math.sqrt(s)
        return Partial(values=m.mean.to(dtype), stderr=stderr.to(dtype))


def _row_blocks(n_rows: int, s: int, size: int) -> Iterator[tuple[int, int]]:
    """Ranges of (row, sample) pairs, at most ``size`` each, that are whole rows (all ``s``
    samples of each) or, when one row's samples do not fit, a part of one row."""
    if size >= s:
        yield from chunks(n_rows * s, size - size % s)
        return
    for i in range(n_rows):
        for a, b in chunks(s, size):
            yield i * s + a, i * s + b


class _Moments:
    """Per-row count, mean and sum of squared deviations (float64), merged block by block."""

    def __init__(self, n_rows: int, shape: tuple[int, ...], device: torch.device) -> None:
        self.count = torch.zeros(n_rows, dtype=torch.float64, device=device)
        self.mean = torch.zeros((n_rows, *shape), dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)
        self.shape1 = (-1,) + (1,) * len(shape)

    def add(self, lo: int, v: torch.Tensor) -> None:
        """Merge values ``v`` (R, g, ...): ``g`` samples of each of rows ``lo .. lo + R``."""
        hi, nb = lo + v.shape[0], v.shape[1]
        var, mb = torch.var_mean(v.to(torch.float64), dim=1, correction=0)
        na = self.count[lo:hi]
        tot = na + nb
        delta = mb.sub_(self.mean[lo:hi])
        self.mean[lo:hi] += delta * (nb / tot).view(self.shape1)
        self.m2[lo:hi] += var.mul_(nb).add_(delta.square_().mul_((na * nb / tot).view(self.shape1)))
        self.count[lo:hi] = tot


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
