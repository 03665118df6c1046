"""Class activation maps: where in a layer's feature map the evidence for a class sits.

Every CAM weighs the channel maps ``A_k`` of one layer and sums them. The layer is given by its
dotted name (``layer="layer4"``); by default it is the last layer, in execution order, whose
output is spatial and which the predicted score depends on (for vision transformers: the last
normalisation layer before the last attention, whose output is a token grid). The chosen name is
in ``exp.meta["layer"]``.

Results
-------
``exp.values``
    ``relu(cam)`` upsampled bilinearly (``align_corners=False``) to the input size, shape
    ``(N, 1, H, W)`` (``(N, 1, L)`` for 1-D inputs) — broadcastable over the input's channels.
    Guided Grad-CAM's values have the input's shape ``(N, C, H, W)``.
``exp.extras["cam"]``
    The raw, signed map at the layer's resolution ``(N, h, w)``, before the ReLU.
``exp.extras["cam_normalized"]``
    ``relu(cam)`` min-max scaled per row to [0, 1] at the layer's resolution — the map that
    pytorch-grad-cam returns before resizing.

Gradient CAMs, Eigen-CAM and the activations for Score-/Ablation-CAM come out of a single
forward (and backward) pass that also yields the scores; Score- and Ablation-CAM then evaluate
all (row, channel) pairs in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Union

import torch
from torch import nn

from ..core.batching import BatchSize, rows_located, run_chunked
from ..core.options import Option
from ..core.registry import register
from ..errors import ModelError, OptionError
from . import _cam_maps as maps_
from ._base import Call, Partial
from ._cam_guided import guided_backprop
from ._cam_layers import (
    Grid,
    capture_layer,
    check_input,
    default_layer,
    find_grid,
    normalize_maps,
    preferred_format,
    to_maps,
    upsample,
)
from ._cam_pass import PassResult, SinglePassAttributor, select_scores
from ._cam_perturb import ablation_weights, score_cam_weights

#: Rows of the batch on which the default layer's maps are checked (see ``default_layer``).
PROBE_ROWS = 8

__all__ = [
    "AblationCAM",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
]

_GradFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _CAM(SinglePassAttributor):
    """Shared machinery: layer choice, the single pass, and the result layout."""

    _uses_gradients: ClassVar[bool] = True

    def __init__(self, model: Any, *, layer: str | None = None, batch_size: BatchSize = "auto") -> None:
        super().__init__(model, batch_size=batch_size)
        self.layer = layer
        self._default_layers: dict[tuple[Any, ...], str] = {}
        self._formats: dict[tuple[Any, ...], torch.memory_format] = {}

    # -- the layer ------------------------------------------------------------------------
    def _layer_name(self, x: torch.Tensor) -> str:
        module = self.model.module
        if module is None:
            raise ModelError(
                f"{self.name!r} reads a layer's activations, so it needs a torch.nn.Module; "
                f"got {type(self.model.obj).__name__}. Use a perturbation method instead"
            )
        if self.layer is not None:
            self.model.layer(self.layer)  # raises LayerNotFoundError with close names
            return self.layer
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if key not in self._default_layers:
            self._default_layers[key] = default_layer(module, x[:PROBE_ROWS])[0]
        return self._default_layers[key]

    def _format(self, x: torch.Tensor) -> torch.memory_format:
        """The memory format the model runs fastest in (see ``preferred_format``), cached."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if key not in self._formats:
            assert self.model.module is not None
            self._formats[key] = preferred_format(self.model.module, x)
        return self._formats[key]

    def _grid(self, name: str, out: torch.Tensor, x: torch.Tensor) -> Grid:
        grid = find_grid(tuple(out.shape), x.shape[0], tuple(x.shape))
        if grid is None:
            raise OptionError(
                f"layer {name!r} outputs shape {tuple(out.shape)}, which is not a spatial map "
                f"or a token grid over inputs of shape {tuple(x.shape)}; choose a convolutional "
                "layer (N, C, h, w) or a transformer layer whose tokens form a patch grid"
            )
        return grid

    # -- the single pass ------------------------------------------------------------------
    def _single_pass(self, x: torch.Tensor, targets_for: Any) -> tuple[torch.Tensor, PassResult]:
        check_input(x, self.name)
        model = self.model
        name = self._layer_name(x)
        layer = model.layer(name)
        grad = self._uses_gradients
        fmt = self._format(x)
        res = PassResult(facts={"layer": name, "format": fmt})
        parts: dict[str, list[torch.Tensor]] = {}

        def run(a: int, b: int) -> tuple[dict[str, torch.Tensor], Grid]:
            ctx = torch.enable_grad() if grad else torch.no_grad()
            with ctx, capture_layer(layer, name, grad=grad) as cap:
                out = model.forward(x[a:b].contiguous(memory_format=fmt))
            assert cap.output is not None
            grid = self._grid(name, cap.output, x[a:b])
            with ctx:
                rows = self._rows(cap.output, grid, out, targets_for(out, a, b), name)
            rows["out"] = out.detach()
            return rows, grid

        def consume(a: int, b: int, result: tuple[dict[str, torch.Tensor], Grid]) -> torch.Tensor:
            rows, res.facts["grid"] = result
            for k, v in rows.items():
                parts.setdefault(k, []).append(v)
            return rows["out"]

        outputs = run_chunked(
            rows_located(run, x.shape[0]), x.shape[0], consume=consume, batch_size=self.batch_size,
            model=model,
            grad=grad, key=(self.name, name, tuple(x.shape[1:])),
        )
        assert outputs is not None
        res.rows = {k: torch.cat(v) for k, v in parts.items()}
        return outputs, res

    def _rows(
        self, act: torch.Tensor, grid: Grid, out: torch.Tensor, t: torch.Tensor | None, name: str
    ) -> dict[str, torch.Tensor]:
        """Per-row results of one chunk: here the raw map from activations and gradients."""
        score = select_scores(out, t).sum()
        g = None
        if score.requires_grad:
            (g,) = torch.autograd.grad(score, act, allow_unused=True)
        if g is None:
            raise ModelError(
                f"the target score does not depend on layer {name!r}; pick a layer on the path "
                "from the input to the output"
            )
        return {"raw": self._combine(to_maps(act.detach(), grid), to_maps(g, grid))}

    def _combine(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- the result -----------------------------------------------------------------------
    def _raw(self, call: Call, result: PassResult) -> torch.Tensor:
        return result.rows["raw"]

    def _assemble(self, call: Call, result: PassResult, **kwargs: Any) -> Partial:
        raw = self._raw(call, result)
        cam = raw.clamp(min=0)
        norm = normalize_maps(cam)
        grid: Grid = result.facts["grid"]
        values, extras = self._values(call, cam, norm)
        return Partial(
            values=values,
            extras={"cam": raw, "cam_normalized": norm, **extras},
            meta={
                "layer": result.facts["layer"],
                "layer_default": self.layer is None,
                "grid": grid.describe(),
            },
        )

    def _values(
        self, call: Call, cam: torch.Tensor, norm: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return upsample(cam[:, None], tuple(call.x.shape[2:])), {}


_PARAMS_DOC = """
    Parameters
    ----------
    layer : str or None
        Dotted name of the target layer; ``None`` (default) picks the last spatial layer the
        prediction depends on (see :mod:`unveil.attribution.cam`).
    batch_size : int or "auto"
        Rows per forward pass.
"""


_LAYER = Option("layer", Union[str, nn.Module, None], None, "the target layer (its dotted name or "
                "the module itself); None picks the last spatial layer the prediction depends on")


def _cam(
    name: str, display_name: str, *, gradients: bool, combine: _GradFn | None = None,
    options: tuple[Option, ...] = (), preferred_for: Mapping[str, int] | None = None,
) -> Callable[[type[_CAM]], type[_CAM]]:
    """Register a CAM class, with its map formula, its options and the shared parameter docs."""

    def deco(cls: type[_CAM]) -> type[_CAM]:
        if combine is not None:
            cls._combine = staticmethod(combine)  # type: ignore[method-assign,assignment]  # per-class formula
        if "Parameters" not in (cls.__doc__ or ""):
            cls.__doc__ = (cls.__doc__ or "") + _PARAMS_DOC
        return register(name, family="cam", modalities=("image", "sequence"),
                        needs_gradients=gradients, needs_module=True, display_name=display_name,
                        signed=False, preferred_for=preferred_for,
                        options=(_LAYER, *options))(cls)

    return deco


@_cam("grad_cam", "Grad-CAM", gradients=True, combine=maps_.grad_cam, preferred_for={"image": 1})
class GradCAM(_CAM):
    """Grad-CAM: channel maps weighted by their spatially averaged gradient.

    Selvaraju et al., "Grad-CAM: Visual explanations from deep networks via gradient-based
    localization", ICCV 2017.
    """


@_cam("grad_cam_plus_plus", "Grad-CAM++", gradients=True, combine=maps_.grad_cam_plus_plus)
class GradCAMPlusPlus(_CAM):
    """Grad-CAM++: channel weights from positive gradients weighted by higher-order terms.

    Chattopadhay et al., "Grad-CAM++: Generalized gradient-based visual explanations for deep
    convolutional networks", WACV 2018.
    """


@_cam("xgrad_cam", "XGrad-CAM", gradients=True, combine=maps_.xgrad_cam)
class XGradCAM(_CAM):
    """XGrad-CAM: channel weights ``sum(g * A) / sum(A)``, from the axioms of sensitivity and
    conservation.

    Fu et al., "Axiom-based Grad-CAM: Towards accurate visualization and explanation of CNNs",
    BMVC 2020.
    """


@_cam("layer_cam", "LayerCAM", gradients=True, combine=maps_.layer_cam)
class LayerCAM(_CAM):
    """LayerCAM: activations weighted element-wise by their positive gradients.

    Jiang et al., "LayerCAM: Exploring hierarchical class activation maps for localization",
    IEEE TIP 2021.
    """


@_cam("hires_cam", "HiResCAM", gradients=True, combine=maps_.hires_cam)
class HiResCAM(_CAM):
    """HiResCAM: activations weighted element-wise by their gradients (no averaging).

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv:2011.08891, 2020.
    """


@_cam("eigen_cam", "Eigen-CAM", gradients=False)
class EigenCAM(_CAM):
    """Eigen-CAM: the activations' projection on their first principal component.

    Class-agnostic (the target is recorded but does not change the map). Muhammad & Yeasin,
    "Eigen-CAM: Class activation map using principal components", IJCNN 2020. The sign of the
    component is fixed so that the map correlates positively with the summed activations.
    """

    _uses_gradients = False

    def _rows(
        self, act: torch.Tensor, grid: Grid, out: torch.Tensor, t: torch.Tensor | None, name: str
    ) -> dict[str, torch.Tensor]:
        return {"raw": maps_.eigen_cam(to_maps(act, grid))}


class _PerturbCAM(_CAM):
    """Gradient-free CAMs that weigh channels by evaluating the model per channel."""

    _uses_gradients = False

    def _rows(
        self, act: torch.Tensor, grid: Grid, out: torch.Tensor, t: torch.Tensor | None, name: str
    ) -> dict[str, torch.Tensor]:
        layer_out = act if grid.batch_first else act.transpose(0, 1)
        return {"maps": to_maps(act, grid), "layer_out": layer_out}


@_cam("score_cam", "Score-CAM", gradients=False, options=(
    Option("align_corners", bool, False, "corner alignment of the bilinear mask upsampling "
           "(True: pytorch-grad-cam's)"),))
class ScoreCAM(_PerturbCAM):
    """Score-CAM: channel weights from the scores of the input masked by each channel map.

    Wang et al., "Score-CAM: Score-weighted visual explanations for convolutional neural
    networks", CVPR Workshops 2020. Weights are the softmax over channels of the target score of
    ``x * normalise(upsample(A_k))``; ``N * C`` model evaluations, chunked.

    Parameters
    ----------
    layer : str or None
        Dotted name of the target layer (default: chosen as for every CAM).
    align_corners : bool
        Corner alignment of the bilinear mask upsampling: ``False`` (default, as every other
        resize in unveil) or ``True`` (pytorch-grad-cam's ``UpsamplingBilinear2d``).
    batch_size : int or "auto"
        Rows per forward pass (masked inputs are chunked too).
    """

    def __init__(self, model: Any, *, layer: str | None = None, align_corners: bool = False,
                 batch_size: BatchSize = "auto") -> None:
        super().__init__(model, layer=layer, batch_size=batch_size)
        self.align_corners = bool(align_corners)

    def _raw(self, call: Call, result: PassResult) -> torch.Tensor:
        a = result.rows["maps"]
        w = score_cam_weights(call.model, call.x, a, call.targets,
                              align_corners=self.align_corners, batch_size=self.batch_size,
                              memory_format=result.facts["format"])
        return maps_.weighted_sum(w, a)


@_cam("ablation_cam", "Ablation-CAM", gradients=False, options=(
    Option("ablation_value", Union[float, Literal["auto"]], "auto", "what an ablated channel "
           "is set to; 'auto': 0 for non-negative activations, else far below the minimum"),))
class AblationCAM(_PerturbCAM):
    """Ablation-CAM: channel weights from the relative score drop when a channel is removed.

    Desai & Ramaswamy, "Ablation-CAM: Visual explanations for deep convolutional network via
    gradient-free localization", WACV 2020. ``N * C`` model evaluations, chunked.

    Parameters
    ----------
    layer : str or None
        Dotted name of the target layer (default: chosen as for every CAM).
    ablation_value : float or "auto"
        What an ablated channel is set to; ``"auto"`` (default): 0 for non-negative activations,
        else 1e7 below the row's minimum (as pytorch-grad-cam).
    batch_size : int or "auto"
        Rows per forward pass (ablated copies are chunked too).
    """

    def __init__(self, model: Any, *, layer: str | None = None,
                 ablation_value: float | Literal["auto"] = "auto", batch_size: BatchSize = "auto") -> None:
        super().__init__(model, layer=layer, batch_size=batch_size)
        self.ablation_value = ablation_value

    def _raw(self, call: Call, result: PassResult) -> torch.Tensor:
        name = result.facts["layer"]
        w = ablation_weights(
            call.model, call.model.layer(name), call.x, result.rows["layer_out"],
            result.facts["grid"], call.targets, call.outputs,
            value=self.ablation_value, batch_size=self.batch_size,
            memory_format=result.facts["format"],
        )
        return maps_.weighted_sum(w, result.rows["maps"])


@_cam("guided_grad_cam", "Guided Grad-CAM", gradients=True, combine=maps_.grad_cam)
class GuidedGradCAM(_CAM):
    """Guided Grad-CAM: guided backpropagation times the upsampled, normalised Grad-CAM.

    Selvaraju et al., ICCV 2017 (section 3.1). ``exp.values`` has the input's shape;
    ``exp.extras`` holds the Grad-CAM maps and ``"guided_backprop"``.
    """

    def _values(
        self, call: Call, cam: torch.Tensor, norm: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gb = guided_backprop(call, batch_size=self.batch_size, name=self.name)
        return gb * upsample(norm[:, None], tuple(call.x.shape[2:])), {"guided_backprop": gb}
