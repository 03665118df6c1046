"""Dataset examples: the inputs (and image patches) of a data set that most excite a unit.

The complement of activation maximization recommended by Olah et al. (2017) "Feature
Visualization" (Distill) and used since Zeiler & Fergus (2014): stream a data set through the
model in batches, keep a running top-k of a unit's activation, and for convolutional layers crop
the receptive field of the strongest positions. Memory stays at k inputs whatever the data size.
Ties are broken by data order (earlier rows first), as a stable sort of all activations would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import nn

from ..core.batching import BatchSize
from ..core.hooks import layer_name
from ..core.model import as_model
from ..errors import OptionError
from ._data import stream
from ._receptive import receptive_boxes
from ._taps import taps
from ._util import positive_int

__all__ = ["DatasetExamples", "dataset_examples"]

Unit = Union[int, tuple[int, ...]]


@dataclass
class DatasetExamples:
    """The result of :func:`dataset_examples`.

    Attributes
    ----------
    indices, values, inputs
        (k,) data-set row numbers of the top inputs, their scores, and (k, ...) the inputs.
    patch_indices, patch_values, patch_positions, patch_boxes, patches
        For convolutional layers: the top patches' row numbers and activations (k,), positions
        in the layer's output (k, d), input boxes (k, 2 d) as ``[start, stop)`` per spatial
        axis, and the cropped inputs (a list of arrays; border fields are smaller). ``None``
        for layers without spatial axes.
    """

    layer: str
    unit: Unit
    indices: np.ndarray
    values: np.ndarray
    inputs: np.ndarray
    n_seen: int
    reduce: str
    patch_indices: np.ndarray | None = None
    patch_values: np.ndarray | None = None
    patch_positions: np.ndarray | None = None
    patch_boxes: np.ndarray | None = None
    patches: list[np.ndarray] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def plot(self, ax: Any = None, *, patches: bool = False) -> Any:
        """The top inputs (or patches) side by side, best first; returns the Axes."""
        from ._plot import axes, montage

        ax = axes(ax)
        items = self.patches if patches and self.patches is not None else list(self.inputs)
        if items and np.ndim(items[0]) == 3:
            lo = min(float(np.min(i)) for i in items)
            hi = max(float(np.max(i)) for i in items)
            pic = montage([(i - lo) / max(hi - lo, 1e-12) for i in items])
            ax.imshow(pic, cmap=None if pic.ndim == 3 else "gray", vmin=0.0, vmax=1.0)
            ax.set_axis_off()
        else:
            ax.bar(np.arange(len(self.values)), self.values)
            ax.set_xticks(np.arange(len(self.values)), [str(i) for i in self.indices])
            ax.set_xlabel("data row")
        ax.set_title(f"top {len(self.values)} for {self.layer!r} unit {self.unit}")
        return ax


class _TopK:
    """A running top-k of scored candidates with payload tensors, stable in arrival order."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.fields: dict[str, torch.Tensor] | None = None

    def push(self, values: torch.Tensor, x: torch.Tensor, x_index: torch.Tensor | None = None,
             **payload: torch.Tensor) -> None:
        """Add candidates; ``x[x_index]`` (or ``x``) holds each one's input, gathered lazily."""
        order = torch.sort(values, descending=True, stable=True).indices[: self.k]
        rows_x = x[order] if x_index is None else x[x_index[order]]
        new = {"values": values[order], "x": rows_x, **{n: t[order] for n, t in payload.items()}}
        if self.fields is not None:
            new = {n: torch.cat([self.fields[n], t]) for n, t in new.items()}
            order = torch.sort(new["values"], descending=True, stable=True).indices[: self.k]
            new = {n: t[order] for n, t in new.items()}
        self.fields = {n: t.detach().clone() for n, t in new.items()}


def _unit_map(a: torch.Tensor, unit: Unit) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B,) or (B, *spatial) activations of the unit, and a fixed position for a tuple unit."""
    if isinstance(unit, (int, np.integer)) and not isinstance(unit, bool):
        if not -a.shape[1] <= unit < a.shape[1]:
            raise OptionError(f"unit {unit} is out of range: the layer has {a.shape[1]} channels/units")
        return a[:, int(unit)], None
    if isinstance(unit, tuple) and len(unit) == a.ndim - 1 and all(isinstance(i, (int, np.integer)) for i in unit):
        if any(not -s <= i < s for i, s in zip(unit, a.shape[1:])):
            raise OptionError(f"unit {unit} is out of range for activations of shape {tuple(a.shape[1:])}")
        idx: tuple[slice | int, ...] = (slice(None), *(int(i) for i in unit))
        return a[idx], torch.tensor([int(i) for i in unit[1:]], dtype=torch.long)
    raise OptionError(
        f"unit must be a channel (int) or a full index (channel, *position) into one sample's "
        f"activation of shape {tuple(a.shape[1:])}, got {unit!r}"
    )


def dataset_examples(
    model: Any,
    data: Any,
    *,
    layer: str | nn.Module,
    unit: Unit,
    k: int = 9,
    reduce: Literal["max", "mean"] = "max",
    one_patch_per_input: bool = True,
    batch_size: BatchSize = "auto",
) -> DatasetExamples:
    """The ``k`` inputs of ``data`` that most activate ``unit`` of ``layer``, and top patches.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (layers are read with forward hooks).
    data
        A tensor or array (N, ...), chunked by ``batch_size``, or an iterable of batches
        (tensors or ``(x, y)`` tuples, e.g. a ``DataLoader``), read once.
    layer, unit
        The layer's dotted name and a channel (int; unit of a linear layer) or a full index
        ``(channel, *position)`` into one sample's activation.
    k
        How many inputs and patches to keep.
    reduce
        How a channel's map scores an input: ``"max"`` or ``"mean"`` over positions.
    one_patch_per_input
        Patches are each input's strongest position (default) or the strongest positions
        overall, several possibly from one input.

    Returns
    -------
    DatasetExamples
    """
    m = as_model(model)
    layer = layer_name(m.module, layer)
    k = positive_int(k, "k")
    if reduce not in ("max", "mean"):
        raise OptionError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    col = _Collector(unit, k, reduce, one_patch_per_input)
    t0 = time.perf_counter()
    with m.guard(), taps(m, [layer], need_output=False) as run, torch.inference_mode():
        n = stream(m, data, lambda xb: run(xb)[layer], col, batch_size=batch_size, key=("examples", layer))
        top = col.top.fields
        assert top is not None  # stream raises on empty data
        result = DatasetExamples(
            layer=layer, unit=unit, indices=top["rows"].cpu().numpy(), values=top["values"].cpu().numpy(),
            inputs=top["x"].cpu().numpy(), n_seen=n, reduce=reduce,
        )
    if col.patches.fields is not None and col.spatial is not None and m.module is not None:
        assert col.sample is not None
        _add_patches(result, col.patches.fields, col.spatial, m.module, layer, col.sample)
    result.timings["total"] = time.perf_counter() - t0
    return result


class _Collector:
    """Consumes activation batches: running top-k inputs and top-k patches."""

    def __init__(self, unit: Unit, k: int, reduce: str, one_per_input: bool) -> None:
        self.unit, self.reduce, self.one_per_input = unit, reduce, one_per_input
        self.top, self.patches = _TopK(k), _TopK(k)
        self.spatial: tuple[int, ...] | None = None
        self.sample: torch.Tensor | None = None

    def __call__(self, start: int, a: torch.Tensor, xb: torch.Tensor, _y: torch.Tensor | None) -> None:
        u, fixed = _unit_map(a, self.unit)
        rows = torch.arange(start, start + a.shape[0], device=u.device)
        if self.sample is None:
            self.sample = xb[:1].clone()
        if u.ndim == 1:  # a linear unit, or one neuron of a map at a fixed position
            self.top.push(u.float(), xb, rows=rows)
            if fixed is not None and len(fixed):
                self.spatial = tuple(a.shape[2:])
                self.patches.push(u.float(), xb, rows=rows, pos=fixed.expand(len(rows), -1).to(u.device))
            return
        self.spatial = tuple(u.shape[1:])
        flat = u.flatten(1).float()
        self.top.push(flat.amax(1) if self.reduce == "max" else flat.mean(1), xb, rows=rows)
        if self.one_per_input:
            best, where = flat.max(1)
            self.patches.push(best, xb, rows=rows, pos=where)
        else:
            b, p = flat.shape
            img = torch.arange(b, device=u.device).repeat_interleave(p)
            self.patches.push(flat.reshape(-1), xb, img, rows=rows[img],
                              pos=torch.arange(p, device=u.device).repeat(b))


def _add_patches(res: DatasetExamples, f: dict[str, torch.Tensor], shape: tuple[int, ...],
                 module: torch.nn.Module, layer: str, sample: torch.Tensor) -> None:
    pos = f["pos"]
    if pos.ndim == 1:  # flat position -> multi-index
        pos = torch.stack(torch.unravel_index(pos, shape), dim=1)
    with torch.inference_mode(False):
        sample = sample.clone()
        with torch.no_grad():
            boxes = receptive_boxes(module, layer, sample, pos.clone())
    x = f["x"].cpu().numpy()
    crops = []
    for i, box in enumerate(boxes.tolist()):
        sl = tuple(slice(box[2 * j], box[2 * j + 1]) for j in range(len(box) // 2))
        crops.append(x[i][(slice(None), *sl)])
    res.patch_indices = f["rows"].cpu().numpy()
    res.patch_values = f["values"].cpu().numpy()
    res.patch_positions = pos.cpu().numpy()
    res.patch_boxes = boxes.cpu().numpy()
    res.patches = crops
