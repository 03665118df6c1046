"""Reference points for path and reference methods: ``baseline=`` or a ``background=`` set.

References are given as model inputs (token ids for text) and mapped into the attribution
space; a method then evaluates (row, reference) pairs, each row's pairs contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.baselines import BaselineSpec, make_background, make_baseline
from ..errors import BaselineError, OptionError
from ._layers import Space

__all__ = ["Refs", "make_refs"]


@dataclass
class Refs:
    """Reference points in a space and the (row, reference) pairs a method evaluates."""

    points: torch.Tensor  # (J, *point_shape)
    pair_row: torch.Tensor  # (P,) space row of each pair; each row's pairs are contiguous
    pair_ref: torch.Tensor  # (P,) index into points
    per_row: int  # pairs per row: 1 for a baseline, M for a background set
    label: str | int | float  # the baseline as given (a name or number), "tensor", "background(M)"


def make_refs(
    space: Space,
    baseline: BaselineSpec,
    background: Any,
    *,
    seed: int | None,
    require_background: bool = False,
) -> Refs:
    """References for ``baseline=`` (one per row) or ``background=`` (M shared rows).

    Baselines and backgrounds are given in input space (token ids for text) and mapped into the
    space. ``background=`` with ``baseline="mean"`` uses the background's mean as one baseline.
    """
    x = space.inputs
    rows = torch.arange(space.rows.shape[0], device=x.device)
    if require_background:
        if background is None:
            raise BaselineError(
                f"{space.method!r} averages over a background set: pass background= (M, ...) "
                "rows of reference inputs, e.g. a sample of the training data"
            )
        if baseline is not None:
            raise OptionError(f"{space.method!r} takes background=, not baseline=")
    if background is not None and baseline is None:
        bg = make_background(background, x)
        pts = space.map_inputs(bg)
        m = pts.shape[0]
        return Refs(
            pts, rows.repeat_interleave(m), torch.arange(m, device=x.device).repeat(rows.shape[0]),
            m, f"background({m})",
        )
    if background is not None and baseline != "mean":
        raise OptionError(
            "pass either baseline= or background= (a set of baselines), not both; "
            "baseline='mean' with background= uses the background's mean"
        )
    spec = "zeros" if baseline is None else baseline
    if space.text and isinstance(spec, str) and spec != "zeros":
        raise BaselineError(
            f"baseline {spec!r} does not apply to token ids; pass a token id (e.g. the pad "
            "token's), 'zeros', or a tensor of ids"
        )
    bg_t = None if background is None else make_background(background, x)
    b = make_baseline(spec, x, seed=seed, background=bg_t)
    label = spec if isinstance(spec, (str, int, float)) else "tensor"
    return Refs(space.map_inputs(b), rows, space.rows, 1, label)

