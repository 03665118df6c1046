"""Concept relevance propagation (CRP; Achtibat et al. 2023, *Nature Machine Intelligence* 5).

LRP explains *where* the evidence for a prediction lies; CRP asks *which concept* a layer used
there. A channel of a layer is taken as a concept: conditioning on a set of channels keeps the
relevance of those channels at that layer and zeroes the rest during the backward pass, so the
heat map at the input shows where *that* concept was relevant for the prediction. Because LRP
is linear in the relevance at a layer, the conditional heat maps over all channels of a layer
sum to the plain LRP map when every path of the network passes that layer (test:
``tests/concepts/test_crp.py``). Only the relevance that reaches the layer is carried on: in a
residual block the part that takes the shortcut around the layer belongs to none of its concepts
(zennit-crp's default, ``exclude_parallel=True``).

- :func:`conditional_relevance` — heat maps conditioned on given channels (or sets of them),
  many conditions in one batched pass;
- :func:`top_concepts` — the channels with the most relevance at a layer for each prediction,
  with their conditional heat maps;
- :func:`concept_references` — for each concept the data rows (and patches) where it matters
  most: relevance maximisation (the concept's relevance for the row's predicted class) or
  activation maximisation (via :func:`unveil.featurevis.dataset_examples`).

Relevance at the output is the explained logit (as in zennit-crp's ``CondAttribution``); the
default composite is ``"epsilon_plus_flat"``, the composite of the CRP paper's examples.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch

from ..attribution.lrp import Composite
from ..core.batching import BatchSize
from ..core.model import as_model
from ..core.result_file import read_result, write_result
from ..errors import InputError, OptionError
from ..featurevis import dataset_examples
from ._engine_crp import Pass, Relevance, channel_count, masks_for

__all__ = [
    "ConceptReferences",
    "ConceptRelevance",
    "concept_references",
    "conditional_relevance",
    "load_concept_relevance",
    "top_concepts",
]

Concepts = Union[int, Sequence[Union[int, Sequence[int]]], None]


@dataclass
class ConceptReferences:
    """Reference examples of one concept (a set of channels at a layer) from a data set.

    Attributes
    ----------
    channels
        The concept's channels.
    mode
        ``"relevance"`` (rows ranked by the concept's relevance for their predicted class) or
        ``"activation"`` (rows ranked by the channels' largest activation).
    indices, values, inputs
        (k,) data-row numbers, their scores, (k, ...) the rows.
    patches
        For image rows: the crop of each row where the concept matters (relevance: the box of
        the strongest conditional relevance; activation: the receptive field of the strongest
        position); ``None`` otherwise.
    heatmaps
        (k, ...) the conditional heat maps of the rows (relevance mode), else ``None``.
    """

    channels: list[int]
    mode: str
    indices: np.ndarray
    values: np.ndarray
    inputs: np.ndarray
    patches: list[np.ndarray] | None = None
    heatmaps: np.ndarray | None = None
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The references as plain lists (JSON-ready)."""
        return {"name": self.name, "channels": list(self.channels), "mode": self.mode,
                "indices": self.indices.tolist(), "values": self.values.tolist(),
                "inputs": self.inputs.tolist(),
                "patches": None if self.patches is None else [p.tolist() for p in self.patches],
                "heatmaps": None if self.heatmaps is None else self.heatmaps.tolist()}


@dataclass
class ConceptRelevance:
    """Conditional relevance of concepts (channels of one layer) for each explained row.

    A sibling of :class:`~unveil.Explanation`: ``heatmaps[i, j]`` is the input relevance of row
    ``i`` conditioned on the channel set ``concepts[i][j]``; ``channel_relevance[i, c]`` is the
    relevance of channel ``c`` at the layer for row ``i``'s target (no mask), whose sum over
    channels is (up to what the rules above the layer absorb) the explained score.

    Attributes
    ----------
    layer, composite
        The conditioning layer and the LRP composite.
    inputs, targets, scores
        (n, ...) the rows, (n,) the explained classes and their logits.
    concepts
        Per row, per heat map: the list of channels conditioned on.
    heatmaps
        (n, m, ...) the conditional relevance at the input.
    channel_relevance, channel_activation
        (n, C) relevance of each channel at the layer, and its largest activation.
    names
        ``{channel: name}`` for concepts you have named; others show as ``"<layer>:<c>"``.
    references
        :class:`ConceptReferences` per concept, filled by :meth:`with_references`.
    """

    layer: str
    composite: str
    inputs: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    concepts: list[list[list[int]]]
    heatmaps: np.ndarray
    channel_relevance: np.ndarray
    channel_activation: np.ndarray
    names: dict[int, str] = field(default_factory=dict)
    class_names: list[str] | None = None
    references: list[ConceptReferences] = field(default_factory=list)
    channel_axis: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    n_evals: int = 0

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __repr__(self) -> str:
        m = self.heatmaps.shape[1] if self.heatmaps.ndim > 1 else 0
        return (f"ConceptRelevance(layer={self.layer!r}, rows={len(self)}, concepts per row={m}, "
                f"channels={self.channel_relevance.shape[1]}, composite={self.composite!r})")

    @property
    def share(self) -> np.ndarray:
        """(n, C) each channel's relevance as a share of the row's total absolute relevance."""
        tot = np.abs(self.channel_relevance).sum(axis=1, keepdims=True)
        return self.channel_relevance / np.where(tot > 0, tot, 1.0)

    def concept_name(self, channels: Sequence[int]) -> str:
        """A display name of a channel set: the given names, else ``"<layer>:<c>"``."""
        return " + ".join(self.names.get(int(c), f"{self.layer}:{int(c)}") for c in channels)

    def class_name(self, i: int) -> str:
        """The explained class of row ``i`` by name if known."""
        t = int(self.targets[i])
        return self.class_names[t] if self.class_names and 0 <= t < len(self.class_names) else str(t)

    def top(self, i: int = 0, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` channels with the most relevance for row ``i``: ``[(channel, relevance)]``."""
        r = self.channel_relevance[i]
        order = np.argsort(-r, kind="stable")[:k]
        return [(int(c), float(r[c])) for c in order]

    def with_references(self, model: Any, data: Any, *, k: int = 6,
                        mode: Literal["relevance", "activation"] = "relevance",
                        batch_size: BatchSize = "auto") -> ConceptRelevance:
        """This result with reference examples of every concept shown (see
        :func:`concept_references`); returns ``self``."""
        seen: list[list[int]] = []
        for row in self.concepts:
            for chans in row:
                if chans not in seen:
                    seen.append(chans)
        self.references = concept_references(model, data, layer=self.layer, concepts=seen, k=k, mode=mode,
                                             composite=self.composite, batch_size=batch_size,
                                             names=self.names, channel_axis=self.channel_axis)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain lists and numbers (JSON-ready)."""
        return {
            "layer": self.layer, "composite": self.composite, "inputs": self.inputs.tolist(),
            "targets": self.targets.tolist(), "scores": self.scores.tolist(),
            "concepts": self.concepts, "heatmaps": self.heatmaps.tolist(),
            "channel_relevance": self.channel_relevance.tolist(),
            "channel_activation": self.channel_activation.tolist(),
            "names": {str(k): v for k, v in self.names.items()}, "class_names": self.class_names,
            "references": [r.to_dict() for r in self.references],
            "timings": self.timings, "n_evals": self.n_evals,
        }

    def save(self, path: str | Path) -> Path:
        """Write the result to one ``.npz`` (no pickle); read it with :func:`load_concept_relevance`."""
        arrays = {"inputs": self.inputs, "targets": self.targets, "scores": self.scores,
                  "heatmaps": self.heatmaps, "channel_relevance": self.channel_relevance,
                  "channel_activation": self.channel_activation}
        refs = []
        for j, r in enumerate(self.references):
            arrays.update({f"ref{j}.indices": r.indices, f"ref{j}.values": r.values, f"ref{j}.inputs": r.inputs})
            if r.heatmaps is not None:
                arrays[f"ref{j}.heatmaps"] = r.heatmaps
            for q, p in enumerate(r.patches or []):
                arrays[f"ref{j}.patch{q}"] = p
            refs.append({"channels": r.channels, "mode": r.mode, "name": r.name,
                         "n_patches": None if r.patches is None else len(r.patches)})
        meta = {"layer": self.layer, "composite": self.composite, "concepts": self.concepts,
                "names": {str(k): v for k, v in self.names.items()}, "class_names": self.class_names,
                "references": refs, "timings": self.timings, "n_evals": self.n_evals,
                "channel_axis": self.channel_axis}
        return write_result(path, "concept_relevance", meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> ConceptRelevance:
        """Read a result written by :meth:`save`."""
        meta, a = read_result(path, "concept_relevance", what="an unveil concept result")
        refs = []
        for j, r in enumerate(meta["references"]):
            n = r["n_patches"]
            refs.append(ConceptReferences(
                channels=r["channels"], mode=r["mode"], name=r["name"], indices=a[f"ref{j}.indices"],
                values=a[f"ref{j}.values"], inputs=a[f"ref{j}.inputs"], heatmaps=a.get(f"ref{j}.heatmaps"),
                patches=None if n is None else [a[f"ref{j}.patch{q}"] for q in range(n)]))
        return cls(layer=meta["layer"], composite=meta["composite"], inputs=a["inputs"], targets=a["targets"],
                   scores=a["scores"], concepts=meta["concepts"], heatmaps=a["heatmaps"],
                   channel_relevance=a["channel_relevance"], channel_activation=a["channel_activation"],
                   names={int(k): v for k, v in meta["names"].items()}, class_names=meta["class_names"],
                   references=refs, timings=meta["timings"], n_evals=meta["n_evals"],
                   channel_axis=meta.get("channel_axis"))

    def to_html(self, *, full: bool = False, max_rows: int = 4) -> str:
        """Heat maps per concept with names (and references), self-contained HTML."""
        from ..report.crp import concept_relevance_html, page  # the permitted lazy upward call

        body = concept_relevance_html(self, max_rows=max_rows)
        return page(body, "Concept relevance") if full else body

    def _repr_html_(self) -> str:
        return self.to_html()


def load_concept_relevance(path: str | Path) -> ConceptRelevance:
    """Read a :class:`ConceptRelevance` written by its ``save``."""
    return ConceptRelevance.load(path)


# -- helpers ---------------------------------------------------------------------------------

def _conditions(concepts: Concepts, n_channels: int) -> list[list[int]]:
    """Normalise ``concepts`` to a list of channel lists (``None``: every channel alone)."""
    if concepts is None:
        return [[c] for c in range(n_channels)]
    if isinstance(concepts, (int, np.integer)) and not isinstance(concepts, bool):
        concepts = [int(concepts)]
    if isinstance(concepts, (str, bytes)) or not isinstance(concepts, (Sequence, np.ndarray)):
        raise OptionError(
            f"concepts must be a channel (int), a list of channels, or a list of channel lists "
            f"(each a concept made of several channels), got {concepts!r}"
        )
    out: list[list[int]] = []
    for c in concepts:
        items = [c] if isinstance(c, (int, np.integer)) else c
        if isinstance(items, (str, bytes)) or not isinstance(items, (Sequence, np.ndarray)) or not len(items) or any(
                isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in items):
            raise OptionError(f"each concept must be a channel (int) or a non-empty list of channels, got {c!r}")
        out.append(sorted({int(i) for i in items}))
    if not out:
        raise OptionError("concepts is empty: give at least one channel")
    masks_for(out, n_channels, torch.float32, torch.device("cpu"))  # range check
    return out


def _setup(model: Any, x: Any, layer: Any, composite: str | Composite, target: Any,
           axis: int | None = None) -> tuple[Any, torch.Tensor, Relevance, torch.Tensor | None, int]:
    m = as_model(model)
    xt = m.prepare(x)
    from ..core.hooks import layer_name

    name = layer_name(m.module, layer)
    with m.guard():
        rel = Relevance(m, name, composite, xt, axis)  # prepares the copy: runs the model in eval mode
        with torch.no_grad():
            out = rel.dup.forward(xt)
        targets = m.resolve_targets(target, out)
        n_ch = channel_count(rel, xt)
    return m, xt, rel, targets, n_ch


def _names(names: Mapping[int, str] | Sequence[str] | None, n_channels: int) -> dict[int, str]:
    if names is None:
        return {}
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (str, bytes)) or len(names) != n_channels:
        raise OptionError(f"names must be a dict {{channel: name}} or {n_channels} names, one per channel")
    return {i: str(v) for i, v in enumerate(names)}


def _explain(m: Any, xt: torch.Tensor, rel: Relevance, targets: torch.Tensor | None,
             per_row: list[list[list[int]]], n_ch: int, batch_size: BatchSize) -> tuple[Pass, list[int]]:
    """The plain pass (channel relevance) and the masked passes for ``per_row`` conditions."""
    n = xt.shape[0]
    counts = [len(c) for c in per_row]
    rows = torch.repeat_interleave(torch.arange(n, device=xt.device), torch.tensor(counts, device=xt.device))
    conds = [c for row in per_row for c in row]
    masks = masks_for(conds, n_ch, xt.dtype, xt.device)
    with m.guard():
        masked = rel.run(xt[rows], None if targets is None else targets[rows], masks, batch_size=batch_size)
    return masked, counts


def _result(m: Any, xt: torch.Tensor, rel: Relevance, plain: Pass, targets: torch.Tensor | None,
            masked: Pass, counts: list[int], per_row: list[list[list[int]]], names: dict[int, str],
            t0: float) -> ConceptRelevance:
    n = xt.shape[0]
    tnp = targets.cpu().numpy() if targets is not None else np.zeros(n, dtype=np.int64)
    k = max(counts) if counts else 0
    heat = masked.heat.detach().cpu().numpy()
    maps = np.zeros((n, k, *heat.shape[1:]), dtype=heat.dtype)
    at = 0
    for i, c in enumerate(counts):
        maps[i, :c] = heat[at:at + c]
        at += c
    return ConceptRelevance(
        layer=rel.layer, composite=rel.composite, inputs=xt.detach().cpu().numpy(),
        targets=tnp, scores=plain.scores.detach().cpu().numpy(),
        concepts=per_row, heatmaps=maps, channel_relevance=plain.layer_rel.detach().cpu().numpy(),
        channel_activation=plain.act.detach().cpu().numpy(), names=names, class_names=m.class_names,
        timings={"total": time.perf_counter() - t0}, n_evals=m.n_evals, channel_axis=rel.given_axis,
    )


def _plain(m: Any, xt: torch.Tensor, rel: Relevance, targets: torch.Tensor | None, batch_size: BatchSize) -> Pass:
    with m.guard():
        return rel.run(xt, targets, None, batch_size=batch_size)


# -- public functions ------------------------------------------------------------------------

def conditional_relevance(
    model: Any,
    x: Any,
    *,
    layer: Any,
    concepts: Concepts = None,
    target: Any = "predicted",
    composite: str | Composite = "epsilon_plus_flat",
    names: Mapping[int, str] | Sequence[str] | None = None,
    channel_axis: int | None = None,
    batch_size: BatchSize = "auto",
) -> ConceptRelevance:
    """Input relevance of each row conditioned on each concept at ``layer``.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (LRP works on a copy; the model itself is never changed).
    x
        (n, ...) rows to explain.
    layer
        The conditioning layer's dotted name (or the module): its output's axis 1 holds the
        channels (a convolution's maps or a linear layer's units).
    concepts
        A channel, a list of channels (one concept each), or a list of channel lists (a concept
        made of several channels); ``None``: every channel alone.
    target
        ``"predicted"`` (default), a class or one class per row.
    composite
        An LRP preset name or a :class:`~unveil.attribution.lrp.Composite`.
    names
        Names of channels, ``{channel: name}`` or one per channel, for display.
    channel_axis
        The axis of the layer's output that holds the channels (default: 1, or the last for a
        3-D output ``(N, T, D)`` of a layer that is not a convolution, as in a transformer).

    Returns
    -------
    ConceptRelevance
        ``heatmaps`` (n, len(concepts), ...); summed over all channels of the layer the heat
        maps give plain LRP (if no shortcut bypasses the layer).
    """
    t0 = time.perf_counter()
    m, xt, rel, targets, n_ch = _setup(model, x, layer, composite, target, channel_axis)
    conds = _conditions(concepts, n_ch)
    plain = _plain(m, xt, rel, targets, batch_size)
    per_row = [conds for _ in range(xt.shape[0])]
    masked, counts = _explain(m, xt, rel, targets, per_row, n_ch, batch_size)
    return _result(m, xt, rel, plain, targets, masked, counts, per_row, _names(names, n_ch), t0)


def top_concepts(
    model: Any,
    x: Any,
    *,
    layer: Any,
    k: int = 5,
    target: Any = "predicted",
    composite: str | Composite = "epsilon_plus_flat",
    by: Literal["relevance", "abs"] = "relevance",
    names: Mapping[int, str] | Sequence[str] | None = None,
    channel_axis: int | None = None,
    batch_size: BatchSize = "auto",
) -> ConceptRelevance:
    """The ``k`` most relevant channels of ``layer`` for each row's prediction, with their
    conditional heat maps.

    ``by="relevance"`` ranks channels by their (signed) relevance for the target, ``"abs"``
    by its magnitude (evidence for and against). One plain pass ranks the channels; one batched
    masked pass draws the ``k`` heat maps of every row.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise OptionError(f"k must be a whole number >= 1, got {k!r}")
    if by not in ("relevance", "abs"):
        raise OptionError(f"by must be 'relevance' or 'abs', got {by!r}")
    t0 = time.perf_counter()
    m, xt, rel, targets, n_ch = _setup(model, x, layer, composite, target, channel_axis)
    plain = _plain(m, xt, rel, targets, batch_size)
    r = plain.layer_rel.detach()
    score = r.abs() if by == "abs" else r
    kk = min(int(k), n_ch)
    order = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :kk]
    per_row = [[[int(c)] for c in row] for row in order.tolist()]
    masked, counts = _explain(m, xt, rel, targets, per_row, n_ch, batch_size)
    return _result(m, xt, rel, plain, targets, masked, counts, per_row, _names(names, n_ch), t0)


def _relevance_box(heat: np.ndarray, frac: float = 0.25) -> tuple[slice, ...]:
    """The box around the input positions holding the strongest conditional relevance."""
    h = heat.sum(axis=0) if heat.ndim >= 2 else heat
    pos = np.clip(h, 0, None)
    top = pos.max()
    if top <= 0:
        return tuple(slice(0, s) for s in h.shape)
    where = np.argwhere(pos >= frac * top)
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def concept_references(
    model: Any,
    data: Any,
    *,
    layer: Any,
    concepts: Concepts,
    k: int = 6,
    mode: Literal["relevance", "activation"] = "relevance",
    target: Any = "predicted",
    composite: str | Composite = "epsilon_plus_flat",
    names: Mapping[int, str] | None = None,
    channel_axis: int | None = None,
    batch_size: BatchSize = "auto",
) -> list[ConceptReferences]:
    """Reference rows of ``data`` for each concept at ``layer`` (Achtibat et al. 2023, §2.3).

    ``mode="relevance"`` (relevance maximisation) ranks rows by the concept's relevance for
    each row's ``target`` (default its predicted class) — where the model *uses* the concept;
    ``mode="activation"`` ranks rows by the concept's largest activation (what *excites* it),
    with :func:`unveil.featurevis.dataset_examples`. ``data`` is a tensor or array (N, ...).
    Returns one :class:`ConceptReferences` per concept, each with ``k`` rows.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise OptionError(f"k must be a whole number >= 1, got {k!r}")
    if mode not in ("relevance", "activation"):
        raise OptionError(f"mode must be 'relevance' or 'activation', got {mode!r}")
    if not isinstance(data, (torch.Tensor, np.ndarray)):
        raise InputError(f"data must be a tensor or array (N, ...) of rows, got {type(data).__name__}")
    m, xt, rel, targets, n_ch = _setup(model, data, layer, composite, target, channel_axis)
    conds = _conditions(concepts, n_ch)
    label = dict(names or {})
    kk = min(int(k), xt.shape[0])

    def nm(ch: list[int]) -> str:
        return " + ".join(label.get(c, f"{rel.layer}:{c}") for c in ch)

    out: list[ConceptReferences] = []
    if mode == "activation":
        if rel.given_axis not in (None, 1):
            raise OptionError("activation maximisation reads channels on axis 1; use mode='relevance'")
        for ch in conds:
            if len(ch) > 1:
                raise OptionError("activation maximisation ranks one channel at a time; give single channels")
            ex = dataset_examples(m, xt, layer=rel.layer, unit=ch[0], k=kk, reduce="max", batch_size=batch_size)
            out.append(ConceptReferences(channels=ch, mode=mode, indices=ex.indices, values=ex.values,
                                         inputs=ex.inputs, patches=ex.patches, name=nm(ch)))
        return out
    plain = _plain(m, xt, rel, targets, batch_size)
    r = plain.layer_rel.detach()
    masks = masks_for(conds, n_ch, r.dtype, r.device)
    score = r @ masks.T  # (N, m): each concept's relevance per row
    order = torch.sort(score, dim=0, descending=True, stable=True).indices[:kk]  # (k, m)
    rows = order.T.reshape(-1)
    rep = masks.repeat_interleave(kk, dim=0)
    with m.guard():
        heat = rel.run(xt[rows], None if targets is None else targets[rows], rep,
                       batch_size=batch_size).heat.cpu().numpy()
    xs = xt.detach().cpu().numpy()
    for j, ch in enumerate(conds):
        idx = order[:, j].cpu().numpy()
        hm = heat[j * kk:(j + 1) * kk]
        patches = None
        if xs.ndim >= 4:
            patches = [xs[i][(slice(None), *_relevance_box(h))] for i, h in zip(idx, hm)]
        out.append(ConceptReferences(channels=ch, mode=mode, indices=idx, values=score[idx, j].cpu().numpy(),
                                     inputs=xs[idx], patches=patches, heatmaps=hm, name=nm(ch)))
    return out
