"""Value functions: the model's score on an input whose feature groups are partly replaced.

Perturbation methods (occlusion, feature ablation, Shapley values, LIME) all ask one question
many times: what does the model score when only some groups of the input are kept? A
:class:`Game` answers it in batches. Each evaluation is described by a *keep mask* over the
input's elements; elements that are not kept are replaced

- by a **baseline** (``baseline=``: ``"zeros"``, a number, ``"mean"``, ``"blur"``, a tensor),
  one model row per evaluation, or
- **interventionally** by each row of a **background** set (``background=`` of shape
  (M, ...), no baseline): the value is the mean of the score over the M rows
  (Janzing et al., 2020, "Feature relevance quantification in explainable AI: a causal
  problem"), so each evaluation costs M model rows, or
- for **token ids** by a mask or padding id (``mask_id=``): token masking, the value function
  of text models; special tokens and padding (group label -1) are never masked.

Elements in no group are always kept. Inputs are built on the model's device in chunks of the
size :func:`~unveil.core.batching.run_chunked` picks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.baselines import BaselineSpec, make_background, make_baseline
from ..core.batching import BatchSize, map_chunked
from ..core.groups import FeatureGroups, columns, patches, superpixels, tokens
from ..core.model import Model
from ..errors import BaselineError, InputError, OptionError
from ._base import Call

__all__ = ["Game", "KeepFn", "Masker", "make_game", "mask_tokens", "resolve_groups", "table_background"]

# keep_fn(local_rows, units, rows) -> (k, D) bool (or 0/1 of the input's dtype): which elements
# of each evaluation are kept
KeepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def mask_tokens(ids: torch.Tensor, keep: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Token masking: ``ids`` where ``keep`` is true, ``mask_id`` elsewhere (same shape)."""
    return torch.where(keep, ids, torch.full_like(ids, int(mask_id)))


def resolve_groups(groups: Any, x: torch.Tensor, *, images: str = "patches") -> FeatureGroups:
    """The feature groups of a call: the user's, or a default for the modality.

    Defaults: one group per column for tables (N, F), one per token for ids (N, T), 8x8
    patches (or SLIC superpixels when ``images="superpixels"``) for images (N, C, H, W), and
    windows of 8 steps spanning all channels for other shapes (N, ..., L).
    """
    if groups is not None:
        if not isinstance(groups, FeatureGroups):
            raise OptionError(
                f"groups must be a FeatureGroups (see unveil.core.groups: patches, columns, "
                f"column_groups, tokens, superpixels) or None, got {type(groups).__name__}"
            )
        groups.check(x)
        return groups
    shape = tuple(x.shape[1:])
    if not x.is_floating_point():
        if x.ndim != 2:
            raise InputError(f"token ids must be (N, T), got shape {tuple(x.shape)}")
        return tokens(x.cpu())
    if x.ndim == 2:
        return columns(shape[0])
    if x.ndim == 4:
        if images == "superpixels":
            return superpixels(x.cpu(), n_segments=50)
        return patches(shape, 8)
    length = shape[-1]
    lab = (torch.arange(length) // 8).expand(shape).clone().unsqueeze(0)
    n = int(lab.max()) + 1
    return FeatureGroups(n, [f"steps {8 * i}-{min(8 * i + 7, length - 1)}" for i in range(n)],
                         "custom", labels=lab)


class Masker:
    """Turns coalitions of groups into keep masks over a sample's flattened elements."""

    def __init__(self, groups: FeatureGroups, n: int, device: torch.device) -> None:
        self.groups = groups
        self.n_groups = groups.n_groups
        self.labels: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        if groups.labels is not None:
            lab = groups.labels
            if lab.ndim >= 3 and lab.shape[1] > 1 and bool((lab == lab[:, :1]).all()):
                # image groups span every colour channel: masks cover one channel, and
                # Game._inputs broadcasts them over the others
                lab = lab[:, 0]
            self.labels = lab.flatten(1).to(device)  # (1|N, D / channels)
            self.shared = self.labels.shape[0] == 1
        else:
            assert groups.mask_tensor is not None
            self.masks = groups.mask_tensor.flatten(1).to(device)  # (G, D)
            self.shared = True
        self.n = n

    def keep(self, rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(k, D / channels) keep masks for coalitions ``z`` (k, G) bool of samples ``rows`` (k,)."""
        if self.labels is not None:
            # label -1 -> always kept; a float table: index_select of bool is several times slower
            zext = torch.cat([torch.ones_like(z[:, :1]), z], dim=1).to(torch.float32)
            if self.shared:
                return zext.index_select(1, self.labels[0] + 1)
            if bool((rows == rows[0]).all()):  # the usual chunk: one sample's evaluations
                return zext.index_select(1, self.labels[rows[0]] + 1)
            return zext.gather(1, self.labels.index_select(0, rows) + 1)
        assert self.masks is not None
        absent = (~z).to(torch.float32)
        return (absent @ self.masks.to(torch.float32)) == 0

    def ablate(self, rows: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """(k, D / channels) keep masks that remove only group ``group[j]`` from sample ``rows[j]``."""
        if self.labels is not None:
            lab = self.labels[0].unsqueeze(0) if self.shared else self.labels.index_select(0, rows)
            return lab != group.view(-1, 1)
        assert self.masks is not None
        return ~self.masks.index_select(0, group)

    def active(self) -> torch.Tensor:
        """(N, G) bool: which groups have at least one element in each sample."""
        if self.labels is None:
            assert self.masks is not None
            return self.masks.any(dim=1).unsqueeze(0).expand(self.n, -1)
        lab = self.labels + 1
        counts = torch.zeros(lab.shape[0], self.n_groups + 1, device=lab.device)
        counts.scatter_add_(1, lab, torch.ones_like(lab, dtype=counts.dtype))
        return (counts[:, 1:] > 0).expand(self.n, -1)


class Game:
    """Evaluates ``v(keep)``: the target score with the elements outside ``keep`` replaced.

    Parameters
    ----------
    model, x, targets
        The wrapped model, the explained batch (N, ...) and its targets (N,) or ``None``.
    masker
        The feature groups as a :class:`Masker`.
    ref
        Baseline rows (N or 1, D), or background rows (M, D) when ``interventional``.
    interventional
        Average over the background rows instead of replacing by one baseline.
    """

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        targets: torch.Tensor | None,
        masker: Masker,
        *,
        ref: torch.Tensor,
        interventional: bool,
        batch_size: BatchSize = "auto",
        name: str = "perturbation",
    ) -> None:
        self.model, self.x, self.targets, self.masker = model, x, targets, masker
        self.xf = x.reshape(x.shape[0], -1)
        self.ref = ref
        self.interventional = interventional
        # a zero baseline (the usual one): the inputs are x * keep, one pass instead of four
        self.zero_ref = not interventional and not bool(ref.any())
        self.m = ref.shape[0] if interventional else 1
        self.batch_size = batch_size
        self.name = name

    @property
    def rows_per_eval(self) -> int:
        """Model rows one evaluation costs (M with a background, else 1)."""
        return self.m

    def _inputs(self, rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Model inputs from keep masks over all D elements, or over D / c when the groups
        span c channels (the mask is then broadcast over them instead of being copied)."""
        xr = self.xf.index_select(0, rows)
        ref = self.ref if self.interventional or self.ref.shape[0] == 1 else self.ref.index_select(0, rows)
        c = self.xf.shape[1] // keep.shape[1]
        if c > 1:
            keep, xr, ref = keep.unsqueeze(1), xr.view(xr.shape[0], c, -1), ref.view(ref.shape[0], c, -1)
        if self.interventional:
            keep, xr, ref = keep.unsqueeze(1), xr.unsqueeze(1), ref.unsqueeze(0)
        # x * m + r * (1 - m) with m in {0, 1} is exact for finite inputs and, on CPU, several
        # times faster than torch.where with a broadcast bool mask
        m = keep.to(xr.dtype)
        if self.interventional:
            out = xr * m + ref * (1 - m)
        else:  # in place on the gathered rows (a fresh tensor): no temporaries of the input's size
            out = xr.mul_(m)
            if not self.zero_ref:
                out.addcmul_(ref, 1 - m)
        return out.reshape(-1, *self.x.shape[1:])

    def _scores(self, rows: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        out = self.model.forward(inp)
        k = rows.shape[0]
        if out.ndim == 1:
            return out.view(k, self.m).mean(1)
        assert self.targets is not None
        t = self.targets.index_select(0, rows).view(k, 1, 1).expand(k, self.m, 1)
        return out.view(k, self.m, -1).gather(2, t).squeeze(2).mean(1)

    def evaluate(self, rows: torch.Tensor, n_units: int, keep_fn: KeepFn) -> torch.Tensor:
        """Values (R, n_units) float64 of ``n_units`` evaluations for each sample in ``rows``.

        ``keep_fn(j, u, rows[j])`` gives the (k, D) keep masks of evaluations ``u`` of the
        ``j``-th listed sample; it must be a pure function of its arguments.
        """
        rows = rows.to(self.x.device)
        total = rows.shape[0] * n_units
        if total == 0:
            return torch.zeros(rows.shape[0], n_units, dtype=torch.float64, device=self.x.device)

        def run(a: int, b: int) -> torch.Tensor:
            f = torch.arange(a, b, device=self.x.device)
            j, u = f // n_units, f % n_units
            r = rows.index_select(0, j)
            return self._scores(r, self._inputs(r, keep_fn(j, u, r)))

        # no cache key for small jobs: the automatic choice would be capped by their size and
        # that cap would then be reused for larger jobs of the same kind
        key = (self.name, tuple(self.x.shape[1:]), self.m) if total > 64 else None
        with torch.inference_mode():
            v = map_chunked(run, total, batch_size=self.batch_size, model=self.model, key=key)
        return v.to(torch.float64).view(rows.shape[0], n_units)

    def coalitions(self, rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Values (R, S) of coalitions ``z`` (1 or R, S, G) bool for the samples ``rows``."""
        z = z.to(self.x.device)
        s = z.shape[1]
        shared = z.shape[0] == 1
        zf = z.reshape(-1, z.shape[2])

        def keep_fn(j: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            idx = u if shared else j * s + u
            return self.masker.keep(r, zf.index_select(0, idx))

        return self.evaluate(rows, s, keep_fn)

    def empty(self, rows: torch.Tensor) -> torch.Tensor:
        """``v`` of the empty coalition (every group replaced) for ``rows``, (R,) float64."""
        z = torch.zeros(1, 1, self.masker.n_groups, dtype=torch.bool, device=self.x.device)
        return self.coalitions(rows, z)[:, 0]


def _reference(
    x: torch.Tensor, *, baseline: BaselineSpec, background: Any, mask_id: int | None, seed: int | None
) -> tuple[torch.Tensor, bool, dict[str, Any]]:
    """The replacement rows (flattened), whether they are a background, and their description."""
    n = x.shape[0]
    if not x.is_floating_point():
        if background is not None:
            raise OptionError(
                "background= averages over reference rows, which is for continuous inputs; for "
                "token ids pass mask_id= (the id of the mask or padding token)"
            )
        if mask_id is not None and baseline is not None:
            raise OptionError("pass either mask_id= or baseline= for token ids, not both")
        if mask_id is not None:
            if isinstance(mask_id, bool) or not isinstance(mask_id, int):
                raise OptionError(f"mask_id must be an int token id, got {mask_id!r}")
            return torch.full((1, x[0].numel()), int(mask_id), dtype=x.dtype, device=x.device), \
                False, {"mask_id": int(mask_id)}
        if isinstance(baseline, str) and baseline != "zeros":
            raise OptionError(
                f"baseline={baseline!r} makes no sense for token ids; pass mask_id= (the id of "
                "the mask or padding token) or an integer baseline"
            )
        b = make_baseline(baseline, x, seed=seed)
        return b.reshape(n, -1), False, {"baseline": _describe(baseline if baseline is not None else 0)}
    if mask_id is not None:
        raise OptionError("mask_id= is for token ids (integer inputs); use baseline= for these inputs")
    if background is not None:
        bg = make_background(background, x)
        if baseline is None:
            return bg.reshape(bg.shape[0], -1), True, {"value_function": "interventional",
                                                       "n_background": int(bg.shape[0])}
        b = make_baseline(baseline, x, seed=seed, background=bg)
        return b.reshape(n, -1), False, {"baseline": _describe(baseline), "n_background": int(bg.shape[0])}
    b = make_baseline(baseline if baseline is not None else "zeros", x, seed=seed)
    return b.reshape(n, -1), False, {"baseline": _describe(baseline if baseline is not None else "zeros")}


def table_background(model: Model, x: torch.Tensor, name: str) -> torch.Tensor | None:
    """The one default of perturbation and Shapley methods on a table given neither
    ``background=`` nor ``baseline=``: the model's own data (``uv.Model(..., reference=rows)``)
    when it is known, else a refusal — zeros are rarely a neutral value in a table's own units
    (a wine with no proline). ``None`` for inputs that are not tables."""
    if not (x.is_floating_point() and x.ndim == 2):
        return None
    if model.reference is not None and model.reference.shape == tuple(x.shape[1:]):
        return model.reference.background(x)
    raise BaselineError(
        f"{name!r} on a table needs the values that stand for an absent feature: pass "
        "background= (rows of real data, e.g. 50-100 training rows; the score is averaged over "
        "them) or baseline= (one row, or 'mean' with background=), or give the model its data "
        "with uv.Model(model, reference=X_train). Zeros are rarely neutral in a table's own units"
    )


def _describe(spec: Any) -> Any:
    return spec if isinstance(spec, (str, int, float)) else "tensor"


def make_game(
    call: Call,
    groups: FeatureGroups,
    *,
    baseline: BaselineSpec = None,
    background: Any = None,
    mask_id: int | None = None,
    seed: int | None = None,
    batch_size: BatchSize = "auto",
    name: str = "perturbation",
    method: str | None = None,
) -> tuple[Game, dict[str, Any]]:
    """The value function of a call, and a JSON description of it for ``exp.params``.

    ``background`` without ``baseline`` is interventional (mean over the rows); with
    ``baseline`` (e.g. ``"mean"``) the background only defines the baseline. Token ids are
    masked with ``mask_id`` (or an integer ``baseline``, default 0). Without either, elements
    are replaced by zeros.
    """
    x = call.x
    if baseline is None and background is None and mask_id is None:
        background = table_background(call.model, x, method or name)
    ref, interventional, desc = _reference(
        x, baseline=baseline, background=background, mask_id=mask_id, seed=seed
    )
    if not interventional and ref.shape[0] == x.shape[0] and x.shape[0] > 1:
        if bool((ref == ref[:1]).all()):
            ref = ref[:1]  # one baseline shared by all rows
    masker = Masker(groups, x.shape[0], x.device)
    game = Game(call.model, x, call.targets, masker, ref=ref.contiguous(),
                interventional=interventional, batch_size=batch_size, name=name)
    desc.setdefault("value_function", "baseline")
    return game, desc
