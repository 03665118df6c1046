"""What feature visualization maximises: objectives over a model's activations.

An :class:`Objective` maps the activations of one batch (a dict ``layer name -> tensor``, plus
``"output"`` for the model's scores and ``"input"`` for the untransformed input) to **one value
per image**, shape ``(N,)``. Objectives combine with ``+`` and ``-`` (with each other and with
numbers) and scale with ``*`` and ``/`` by numbers::

    obj = channel("layer3", 7) - 0.5 * channel("layer3", 9) + 0.1 * diversity("layer2")

Every index argument (``c``, ``index``, ``k``) is either one value shared by all images or a
sequence with one value per image, so ``channel("layer3", range(32))`` optimises 32 channels at
once, one per image of a batch of 32. :func:`per_image` does the same for arbitrary objectives.

Activation maximization follows Erhan et al. (2009) "Visualizing higher-layer features of a
deep network" and Olah, Mordvintsev & Schubert (2017) "Feature Visualization", Distill; the
diversity term is that article's Gram-matrix similarity penalty; deep dream is Mordvintsev et
al. (2015); the priors follow Mahendran & Vedaldi (2015).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.hooks import layer_name
from ..errors import OptionError
from ._taps import INPUT, OUTPUT

__all__ = [
    "Objective",
    "as_objective",
    "blur",
    "channel",
    "class_logit",
    "direction",
    "diversity",
    "input_norm",
    "l1",
    "layer",
    "neuron",
    "per_image",
    "total_variation",
]

Acts = Mapping[str, torch.Tensor]
Index = Union[int, Sequence[int], np.ndarray, torch.Tensor]
#: A layer: its dotted name, or the module itself (resolved when the objective meets its model).
Layer = Union[str, nn.Module]
NeuronIndex = Union[int, tuple[int, ...], Sequence[Union[int, tuple[int, ...]]]]


class Objective:
    """A function of a batch's activations giving one value per image, to be maximised.

    Parameters
    ----------
    fn
        ``fn(acts) -> Tensor (N,)``; ``acts`` maps layer names (and ``"output"``, ``"input"``)
        to tensors whose first axis is the batch.
    layers
        The keys of ``acts`` that ``fn`` reads.
    name
        A readable description, used in results and reprs.
    """

    def __init__(self, fn: Callable[[Acts], torch.Tensor], layers: Iterable[Any], name: str) -> None:
        self.fn = fn
        self.layers: frozenset[Any] = frozenset(layers)
        self.name = name

    def named(self, root: nn.Module | None) -> Objective:
        """This objective with layers given as modules replaced by their dotted names in
        ``root`` (a module outside ``root`` raises
        :class:`~unveil.errors.LayerNotFoundError`); itself when all layers are names."""
        modules = [k for k in self.layers if isinstance(k, nn.Module)]
        if not modules:
            return self
        names = {k: layer_name(root, k) for k in modules}
        fn, text = self.fn, self.name
        for k, n in names.items():
            text = text.replace(_label(k), repr(n))

        def renamed(acts: Acts) -> torch.Tensor:
            return fn(_ByModule(acts, names))

        return Objective(renamed, [names.get(k, k) for k in self.layers], text)

    @property
    def needs_output(self) -> bool:
        """Whether the model's final scores are read (so the forward pass must run to the end)."""
        return OUTPUT in self.layers

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # -- algebra ------------------------------------------------------------------------
    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            a, b = self, other
            return Objective(lambda t: a(t) + b(t), a.layers | b.layers, f"{a.name} + {b.name}")
        c = _number(other, "+")
        return Objective(lambda t: self(t) + c, self.layers, f"{self.name} + {c:g}")

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(lambda t: -self(t), self.layers, f"-({self.name})")

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other if isinstance(other, Objective) else -_number(other, "-"))

    def __rsub__(self, other: float) -> Objective:
        return (-self) + _number(other, "-")

    def __mul__(self, other: float) -> Objective:
        c = _number(other, "*")
        return Objective(lambda t: c * self(t), self.layers, f"{c:g} * ({self.name})")

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> Objective:
        c = _number(other, "/")
        if c == 0:
            raise OptionError("cannot divide an objective by zero")
        return self * (1.0 / c)


def _number(x: Any, op: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"objectives combine with {op!r} only with numbers"
            f"{' or other objectives' if op in '+-' else ''}; got {type(x).__name__}"
        )
    return float(x)


def as_objective(spec: Objective | str) -> Objective:
    """An :class:`Objective`, or ``"layer:c"`` read as ``channel("layer", c)``."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, str) and ":" in spec:
        name, _, c = spec.rpartition(":")
        if c.strip().lstrip("-").isdigit():
            return channel(name, int(c))
    raise OptionError(
        f"objective must be an Objective (e.g. unveil.featurevis.objectives.channel('layer3', 7)) "
        f"or a string 'layer:channel', got {spec!r}"
    )


# ---------------------------------------------------------------------------- helpers
class _ByModule(Mapping[Any, torch.Tensor]):
    """Activations keyed by name, also readable by the modules that ``names`` maps to names."""

    def __init__(self, acts: Acts, names: Mapping[nn.Module, str]) -> None:
        self._acts, self._names = acts, names

    def __getitem__(self, key: Any) -> torch.Tensor:
        return self._acts[self._names[key] if isinstance(key, nn.Module) else key]

    def __iter__(self) -> Any:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)


def _label(layer: Layer) -> str:
    """How a layer reads in an objective's name: the quoted dotted name, or ``<Type@id>`` for a
    module until :meth:`Objective.named` puts its name in."""
    return repr(layer) if isinstance(layer, str) else f"<{type(layer).__name__}@{id(layer):x}>"


def _get(acts: Acts, key: Layer) -> torch.Tensor:
    a = acts[key]  # type: ignore[index]  # a module key is read through _ByModule
    if a.ndim < 2:
        if key == OUTPUT:
            return a.unsqueeze(1)
        raise OptionError(f"the activation of {key!r} has shape {tuple(a.shape)}; expected (N, ...)")
    return a


def _indices(idx: Index, n: int, size: int, what: str) -> torch.Tensor:
    """One index per image as a LongTensor (N,), validated against ``size``."""
    t = torch.as_tensor(np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx))
    if t.is_floating_point() or t.dtype == torch.bool or t.ndim > 1:
        raise OptionError(f"{what} must be an int or a sequence of ints, got {idx!r}")
    t = t.long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    elif t.numel() != n:
        raise OptionError(
            f"{what} gives {t.numel()} values, one per image, but the batch has {n} images; "
            f"use shape=({t.numel()}, ...) or a single {what}"
        )
    if bool(((t < -size) | (t >= size)).any()):
        raise OptionError(f"{what} {t.tolist()} out of range: the layer has {size} of them")
    return t % size


def _gather(values: torch.Tensor, idx: Index, what: str) -> torch.Tensor:
    """``values[i, idx[i]]`` for (N, K) values."""
    t = _indices(idx, values.shape[0], values.shape[1], what).to(values.device)
    return values.gather(1, t.view(-1, 1)).squeeze(1)


def _spatial_mean(a: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N, C): mean over the axes after the channel axis."""
    return a.flatten(2).mean(2) if a.ndim > 2 else a


def _fmt(v: Any) -> str:
    if isinstance(v, (np.ndarray, torch.Tensor)):
        v = np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v).reshape(-1).tolist()
    if isinstance(v, (range, list)) or (isinstance(v, tuple) and v and isinstance(v[0], tuple)):
        items = list(v)
        return f"[{', '.join(map(str, items[:4]))}{', ...' if len(items) > 4 else ''}]"
    return str(v)


# ---------------------------------------------------------------------------- objectives
def channel(layer: Layer, c: Index) -> Objective:
    """Mean activation of channel ``c`` of ``layer`` (axis 1), over all positions.

    For a fully connected layer (N, F) channel ``c`` is unit ``c``. ``c`` may hold one channel
    per image.
    """

    def fn(acts: Acts) -> torch.Tensor:
        return _gather(_spatial_mean(_get(acts, layer)), c, "channel")

    return Objective(fn, [layer], f"channel({_label(layer)}, {_fmt(c)})")


def _flat_neuron(spec: int | tuple[int, ...], shape: tuple[int, ...]) -> int:
    if isinstance(spec, (int, np.integer)):
        centre = tuple(s // 2 for s in shape[1:])  # centre position of a channel
        spec = (int(spec), *centre)
    if len(spec) != len(shape):
        raise OptionError(
            f"neuron index {spec} has {len(spec)} entries but the layer's activation per sample "
            f"has shape {shape}; give (channel, *position) or a channel (centre position)"
        )
    if any(not -s <= i < s for i, s in zip(spec, shape)):
        raise OptionError(f"neuron index {spec} is out of range for an activation of shape {shape}")
    return int(np.ravel_multi_index(tuple(i % s for i, s in zip(spec, shape)), shape))


def neuron(layer: Layer, index: NeuronIndex) -> Objective:
    """The activation of one unit of ``layer``.

    ``index`` is a tuple into the per-sample activation, e.g. ``(c, y, x)`` for a conv layer or
    ``(j,)`` for a linear one; an int ``c`` means channel ``c`` at the centre position (unit
    ``c`` of a linear layer). A list gives one index per image.
    """
    per_image = isinstance(index, (list, range)) or (
        isinstance(index, tuple) and index and isinstance(index[0], tuple)
    )

    def fn(acts: Acts) -> torch.Tensor:
        a = _get(acts, layer)
        shape = tuple(a.shape[1:])
        specs: list[Any] = list(index) if per_image else [index]  # type: ignore[arg-type]  # per_image checked the kind
        flat = [_flat_neuron(s, shape) for s in specs]
        return _gather(a.flatten(1), flat, "neuron")

    return Objective(fn, [layer], f"neuron({_label(layer)}, {_fmt(index) if per_image else index})")


def layer(layer: Layer) -> Objective:
    """Mean squared activation of the whole layer: the L2 ("deep dream") objective.

    Mordvintsev, Olah & Tyka (2015) "Inceptionism: going deeper into neural networks".
    """

    def fn(acts: Acts) -> torch.Tensor:
        return _get(acts, layer).flatten(1).pow(2).mean(1)

    return Objective(fn, [layer], f"layer({_label(layer)})")


def class_logit(k: Index) -> Objective:
    """The model's score for class ``k`` (the raw output, e.g. the logit)."""

    def fn(acts: Acts) -> torch.Tensor:
        return _gather(_get(acts, OUTPUT), k, "class")

    return Objective(fn, [OUTPUT], f"class_logit({_fmt(k)})")


def direction(layer: Layer, v: Any, *, cosine: bool = False) -> Objective:
    """Projection of ``layer``'s activation onto a direction ``v`` (normalised to unit length).

    ``v`` of shape (C,) is a direction over channels, scored at every position and averaged;
    ``v`` shaped like one sample's activation (C, H, W) is scored as a whole; a leading batch
    axis (N, C) or (N, C, H, W) gives each image its own direction. With ``cosine=True`` the
    score is the cosine similarity instead of the projection.
    """
    vt = torch.as_tensor(np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v))
    if not vt.is_floating_point() or vt.ndim == 0 or not bool(torch.isfinite(vt).all()):
        raise OptionError(f"direction must be a finite float vector or tensor, got {v!r}")

    def fn(acts: Acts) -> torch.Tensor:
        a = _get(acts, layer)
        d = vt.to(device=a.device, dtype=a.dtype)
        full = tuple(a.shape[1:])
        if d.ndim == 1 or tuple(d.shape) == full:
            d = d.unsqueeze(0)  # one direction shared by every image
        channelwise = tuple(d.shape[1:]) != full and d.ndim == 2 and a.ndim > 2
        if d.shape[0] not in (1, a.shape[0]) or not (
            tuple(d.shape[1:]) == full or (channelwise and d.shape[1] == a.shape[1])
        ):
            raise OptionError(
                f"direction of shape {tuple(vt.shape)} does not fit {_label(layer)}'s activation "
                f"{full} for a batch of {a.shape[0]}: give (C,) = ({a.shape[1]},), the "
                "per-sample shape, or either with a leading axis of one per image"
            )
        if channelwise:  # a direction over channels, scored at each position
            d = d.view(*d.shape, *([1] * (a.ndim - 2)))
            dots = (a * d).sum(1) / (d.norm(dim=1) + 1e-12)
            if cosine:
                dots = dots / (a.norm(dim=1) + 1e-8)
            out: torch.Tensor = dots.flatten(1).mean(1)
            return out
        af, df = a.flatten(1), d.flatten(1)
        dots = (af * df).sum(1) / (df.norm(dim=1) + 1e-12)
        proj: torch.Tensor = dots / (af.norm(dim=1) + 1e-8) if cosine else dots
        return proj

    return Objective(fn, [layer], f"direction({_label(layer)}, shape {tuple(vt.shape)})")


def diversity(layer: Layer) -> Objective:
    """Minus each image's mean similarity to the other images of the batch.

    Similarity is the cosine between the images' Gram matrices (channel correlations) at
    ``layer``, as in Olah et al. (2017); for a fully connected layer, between the activation
    vectors. Adding ``w * diversity(layer)`` to an objective pushes a batch apart. Zero for a
    batch of one.
    """

    def fn(acts: Acts) -> torch.Tensor:
        a = _get(acts, layer)
        n = a.shape[0]
        if n < 2:
            return a.new_zeros(n)
        if a.ndim > 2:
            f = a.flatten(2)
            g = (f @ f.transpose(1, 2) / f.shape[2]).flatten(1)
        else:
            g = a
        g = F.normalize(g, dim=1, eps=1e-8)
        sim = g @ g.t()
        return -(sim.sum(1) - sim.diagonal()) / (n - 1)

    return Objective(fn, [layer], f"diversity({_label(layer)})")


def per_image(objectives: Sequence[Objective]) -> Objective:
    """Image ``i`` of the batch maximises ``objectives[i]`` (needs ``len(objectives)`` images)."""
    objs = [as_objective(o) for o in objectives]
    if not objs:
        raise OptionError("per_image needs at least one objective")

    def fn(acts: Acts) -> torch.Tensor:
        vals = torch.stack([o(acts) for o in objs], dim=1)  # (N, K)
        if vals.shape[1] != vals.shape[0]:
            raise OptionError(
                f"per_image got {vals.shape[1]} objectives for a batch of {vals.shape[0]} "
                f"images; use shape=({vals.shape[1]}, ...)"
            )
        return vals.diagonal()

    layers = frozenset().union(*(o.layers for o in objs))
    return Objective(fn, layers, f"per_image({len(objs)} objectives)")


# ---------------------------------------------------------------------------- input priors
def input_norm(alpha: float = 6.0, *, constant: float | torch.Tensor = 0.0) -> Objective:
    """Mean ``|x - constant| ** alpha`` of the (untransformed) input: the alpha-norm prior.

    Mahendran & Vedaldi (2015) "Understanding deep image representations by inverting them"
    use ``alpha = 6``. A penalty: subtract it from an objective.
    """
    if alpha <= 0:
        raise OptionError(f"alpha must be positive, got {alpha}")

    def fn(acts: Acts) -> torch.Tensor:
        return (acts[INPUT] - constant).abs().pow(alpha).flatten(1).mean(1)

    return Objective(fn, [INPUT], f"input_norm({alpha:g})")


def l1(constant: float | torch.Tensor = 0.0) -> Objective:
    """Mean ``|x - constant|`` of the input (a sparsity penalty: subtract it)."""
    return input_norm(1.0, constant=constant)


def _diffs(x: torch.Tensor) -> torch.Tensor:
    """Squared forward differences summed over the spatial axes (dims >= 2), common crop."""
    if x.ndim < 3:
        raise OptionError(
            f"total variation needs spatial inputs (N, C, ...), got shape {tuple(x.shape)}"
        )
    d = x.ndim - 2
    out = torch.zeros_like(x[(slice(None), slice(None), *[slice(0, -1)] * d)])
    for k in range(d):
        hi = [slice(0, -1)] * d
        hi[k] = slice(1, None)
        lo = [slice(0, -1)] * d
        out = out + (x[(slice(None), slice(None), *hi)] - x[(slice(None), slice(None), *lo)]) ** 2
    return out


def total_variation(beta: float = 1.0) -> Objective:
    """Mean ``(dx² + dy²) ** (beta / 2)`` over the input's pixels: the TV^beta prior.

    ``beta=1`` is the isotropic total variation; Mahendran & Vedaldi (2015) use ``beta=2`` for
    inversion. A penalty: subtract it.
    """
    if beta <= 0:
        raise OptionError(f"beta must be positive, got {beta}")

    def fn(acts: Acts) -> torch.Tensor:
        sq = _diffs(acts[INPUT])
        v = sq if beta == 2 else (sq + 1e-8).pow(beta / 2)
        return v.flatten(1).mean(1)

    return Objective(fn, [INPUT], f"total_variation({beta:g})")


def blur(sigma: float = 0.5) -> Objective:
    """Half the mean squared distance from the input to its (fixed) Gaussian blur.

    Its gradient pulls each image towards a blurred copy of itself: "blur each step" from
    Olah et al. (2017). A penalty: subtract it.
    """
    if sigma <= 0:
        raise OptionError(f"sigma must be positive, got {sigma}")
    from ..core.baselines import blur as gaussian_blur

    def fn(acts: Acts) -> torch.Tensor:
        x = acts[INPUT]
        if x.ndim != 4:
            raise OptionError(f"blur needs images (N, C, H, W), got shape {tuple(x.shape)}")
        target = gaussian_blur(x.detach(), sigma)
        return 0.5 * (x - target).pow(2).flatten(1).mean(1)

    return Objective(fn, [INPUT], f"blur({sigma:g})")
