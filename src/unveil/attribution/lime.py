"""LIME: a weighted linear surrogate fitted around each input (Ribeiro et al., 2016,
"Why should I trust you? Explaining the predictions of any classifier").

Three samplers, as in the ``lime`` package (version 0.2.0.1):

- **tables** (N, F) with ``background=`` (the training rows): every feature is discretised into
  its training quartiles; a sample draws each feature's quartile from its training frequency
  and a value inside it from a normal truncated to the quartile (mean and standard deviation
  of the training values there). The interpretable feature is "in the same quartile as x".
  Kernel ``sqrt(exp(-d**2 / w**2))`` on the Euclidean distance of these indicators,
  ``w = 0.75 sqrt(F)``.
- **images** (N, C, H, W): feature groups (default SLIC superpixels) are kept or replaced
  with probability 1/2 each.
- **token ids** (N, T): a number of tokens ``k`` uniform in ``1..T`` is masked (``mask_id=``).

Images, text and tables given ``groups=`` use the value functions of
:mod:`unveil.attribution._value_functions` (``baseline=``, ``background=``, ``mask_id=``) and
the cosine-distance kernel with width 0.25. The first sample is the input itself. The surrogate
is a weighted ridge regression (``alpha=1``, intercept unpenalised, as scikit-learn's ``Ridge``
with ``sample_weight``) solved for all rows at once in float64.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch

from ..core.baselines import BaselineSpec, make_background
from ..core.batching import BatchSize, map_chunked
from ..core.draws import resolve_seed
from ..core.groups import columns
from ..core.options import Option
from ..core.registry import register
from ..errors import BaselineError, OptionError
from ._base import Attributor, Call, Partial
from ._options import REFERENCE
from ._value_functions import make_game, resolve_groups, table_background

__all__ = ["Lime", "quartile_sampler", "weighted_ridge"]


def weighted_ridge(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted ridge regressions, one per row: coefficients (R, P), intercepts, R² and SEs.

    ``x`` (R, S, P), ``y`` and ``w`` (R, S). Minimises ``sum w (y - x b - c)**2 + alpha |b|**2``
    (scikit-learn's ``Ridge(alpha)`` with ``sample_weight=w``: centred with weighted means,
    intercept unpenalised). The standard errors are the sandwich (HC0) estimate. Sums over
    samples run in ``x``'s dtype (float32 is ample for LIME's 0/1 designs) with ``y`` centred
    first, so nothing cancels; means, centring and the (P, P) solves are float64.
    """
    f64, dt = torch.float64, x.dtype
    y, w = y.to(f64), w.to(f64)
    sw = w.sum(1)
    xm = (w.to(dt).unsqueeze(1) @ x).squeeze(1).to(f64) / sw.unsqueeze(1)  # weighted means (R, P)
    ym = (w * y).sum(1) / sw
    yc = y - ym.unsqueeze(1)

    def wsum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # sum_k a_k x_k x_k^T - centring
        return ((x * a.to(dt).unsqueeze(2)).transpose(1, 2) @ x).to(f64) + b

    outer = xm.unsqueeze(2) * xm.unsqueeze(1)
    h = wsum(w, -sw.view(-1, 1, 1) * outer) + alpha * torch.eye(x.shape[2], dtype=f64, device=x.device)
    rhs = ((w * yc).to(dt).unsqueeze(1) @ x).squeeze(1).to(f64)  # sum w yc (x - xm) = sum w yc x
    hinv = torch.linalg.inv(h)
    coef = (hinv @ rhs.unsqueeze(2)).squeeze(2)
    intercept = ym - (xm * coef).sum(1)
    r = yc - ((x @ coef.to(dt).unsqueeze(2)).squeeze(2).to(f64) - (xm * coef).sum(1, keepdim=True))
    score = 1 - (w * r**2).sum(1) / (w * yc**2).sum(1).clamp(min=1e-300)
    u = (w * r) ** 2  # sum_k u_k (x_k - m)(x_k - m)^T, expanded
    xu = (u.to(dt).unsqueeze(1) @ x).squeeze(1).to(f64)
    cross = xm.unsqueeze(2) * xu.unsqueeze(1)
    meat = wsum(u, -cross - cross.transpose(1, 2) + u.sum(1).view(-1, 1, 1) * outer)
    se = (hinv @ meat @ hinv).diagonal(dim1=1, dim2=2).clamp(min=0).sqrt()
    return coef, intercept, score, se


def quartile_sampler(background: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-feature quartile borders and per-bin frequency, mean, std, min and max (float64)."""
    bg = background.to(torch.float64)
    m, f = bg.shape
    q = torch.quantile(bg, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64, device=bg.device), dim=0).T
    dup = torch.zeros_like(q, dtype=torch.bool)
    dup[:, 1:] = q[:, 1:] == q[:, :-1]  # lime keeps unique borders only
    borders = torch.where(dup, torch.full_like(q, math.inf), q).sort(dim=1).values
    bins = torch.searchsorted(borders, bg.T.contiguous())  # (F, M), side='left' as numpy
    onehot = torch.nn.functional.one_hot(bins, 4).to(torch.float64)  # (F, M, 4)
    cnt = onehot.sum(1)
    mean = (onehot * bg.T.unsqueeze(2)).sum(1) / cnt.clamp(min=1)
    var = (onehot * (bg.T.unsqueeze(2) - mean.unsqueeze(1)) ** 2).sum(1) / cnt.clamp(min=1)
    lo, hi = bg.min(0).values.unsqueeze(1), bg.max(0).values.unsqueeze(1)
    fin = torch.where(torch.isfinite(borders), borders, hi)
    return {
        "borders": borders, "freq": cnt / m, "mean": mean, "std": var.sqrt() + 1e-11,
        "min": torch.cat([lo, fin], 1), "max": torch.cat([fin, hi], 1),
    }


def _bin_table(st: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per (feature, bin), flattened: ``2 CDF(lower) - 1``, twice the CDF width, mean, std.

    A value is ``mean + std sqrt(2) erfinv(lo + u width)``: a normal truncated to the bin
    (a bin's mean lies inside it, so ``lo <= 0 <= hi`` and no tail is extreme).
    """
    a = (st["min"] - st["mean"]) / st["std"]
    b = (st["max"] - st["mean"]) / st["std"]
    plo, phi = torch.special.ndtr(a), torch.special.ndtr(b)
    sd = torch.where(a < b, st["std"], torch.zeros_like(st["std"])) * math.sqrt(2)
    return torch.stack([2 * plo - 1, 2 * (phi - plo), st["mean"], sd]).reshape(4, -1)


def _sample_tables(
    x: torch.Tensor, st: dict[str, torch.Tensor], s: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (N * S, F) around each row, in the model's dtype, and their same-quartile
    indicators (N, S, F). Sample 0 of each row is the row itself."""
    n, f = x.shape
    dev = st["freq"].device
    u = torch.from_numpy(rng.random((2, n * s, f), dtype=np.float32)).to(dev)
    # inverse CDF of the bins; borders past the last bin with data are never crossed
    cum = st["freq"].cumsum(1).to(torch.float32)
    last = ((st["freq"] > 0) * torch.arange(4, device=dev)).amax(1, keepdim=True)
    cum = torch.where(torch.arange(4, device=dev) < last, cum, torch.full_like(cum, 2.0)).T.contiguous()
    base = 4 * torch.arange(f, device=dev)
    idx = base.expand(n * s, f).clone()  # flat (feature, bin) index
    for k in range(3):
        idx += u[0] >= cum[k]
    plo, width, mean, sd = _bin_table(st).to(torch.float32)
    p = (plo.take(idx) + u[1] * width.take(idx)).clamp_(-1 + 1e-7, 1 - 1e-7)
    vals = torch.erfinv(p).mul_(sd.take(idx)).add_(mean.take(idx)).view(n, s, f)
    xb = torch.searchsorted(st["borders"], x.to(torch.float64).T.contiguous()).T + base  # (N, F)
    same = idx.view(n, s, f) == xb.unsqueeze(1)
    vals[:, 0] = x.to(vals.dtype)
    same[:, 0] = True
    return vals.view(n * s, f).to(x.dtype), same


@register(
    "lime", family="perturbation", stochastic=True, display_name="LIME", signed=True,
    common=("background",), preferred_for={"tabular": 3},
    options=(
        Option("n_samples", Union[int, None], None, "perturbed samples per row, the input "
               "included; None: 5000 for tables and token ids, 1000 for images", low=2),
        Option("kernel_width", Union[float, None], None, "width of the exponential kernel "
               "(> 0); None: 0.75 sqrt(F) for tables, 0.25 otherwise", low=0),
        Option("alpha", float, 1.0, "ridge penalty of the surrogate", low=0),
        *REFERENCE,
    ),
)
class Lime(Attributor):
    """LIME: coefficients of a weighted ridge surrogate on interpretable features.

    Parameters
    ----------
    n_samples : int, optional
        Perturbed samples per row, the input itself included (default as in ``lime``: 5000
        for tables and token ids, 1000 for images).
    kernel_width : float, optional
        Width of the exponential kernel (default ``0.75 sqrt(F)`` for tables on the Euclidean
        distance, 0.25 on the cosine distance otherwise).
    alpha : float
        Ridge penalty (default 1, as ``lime``).

    Call with ``background=`` (tables: the training rows, required unless ``groups=`` is
    given), ``groups=`` (default superpixels for images, tokens for ids), ``baseline=`` or
    ``mask_id=`` and ``seed=``. ``exp.values`` spreads the coefficients on the elements;
    ``exp.extras`` holds ``group_values``, ``intercept`` and ``score`` (weighted R²);
    ``exp.stderr`` is the sandwich standard error of the coefficients.
    """

    def __init__(
        self, model: Any, *, n_samples: int | None = None, kernel_width: float | None = None,
        alpha: float = 1.0, batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if kernel_width is not None and not kernel_width > 0:
            raise OptionError(f"kernel_width must be positive, got {kernel_width!r}")
        self.n_samples = None if n_samples is None else int(n_samples)
        self.kernel_width = kernel_width
        self.alpha = float(alpha)

    def _attribute(
        self, call: Call, *, groups: Any = None, baseline: BaselineSpec = None, background: Any = None,
        mask_id: int | None = None, seed: int | None = None,
    ) -> Partial:
        x = call.x
        seed_ = resolve_seed(seed)
        g = torch.Generator().manual_seed(seed_)
        if x.is_floating_point() and x.ndim == 2 and groups is None:
            if background is None and baseline is None and mask_id is None:
                background = table_background(call.model, x, self.name)
            if baseline is not None or mask_id is not None:
                raise OptionError("LIME for tables samples quartiles of background=; it takes no "
                                  "baseline= or mask_id= (pass groups= to use a baseline)")
            return self._tables(call, make_background(background, x), seed_)
        return self._masking(call, groups, baseline, background, mask_id, g, seed_)

    def _tables(self, call: Call, bg: torch.Tensor, seed: int) -> Partial:
        x, model = call.x, call.model
        n, f = x.shape
        if bg.shape[0] < 2:
            raise BaselineError(f"LIME for tables needs several background rows, got {bg.shape[0]}")
        s = self.n_samples or 5000
        flat, same = _sample_tables(x, quartile_sampler(bg), s, np.random.default_rng(seed))
        t = None if call.targets is None else call.targets.repeat_interleave(s)

        def run(a: int, b: int) -> torch.Tensor:
            return model.scores(flat[a:b], None if t is None else t[a:b])

        with torch.inference_mode():
            y = map_chunked(run, n * s, batch_size=self.batch_size, model=model,
                            key=("lime", (f,))).view(n, s).to(torch.float64)
        d2 = f - same.sum(2).to(torch.float64)
        width = self.kernel_width or 0.75 * math.sqrt(f)
        w = torch.exp(-d2 / width**2).sqrt()
        return self._fit(call, same.to(torch.float32), y, w, columns(f), seed, {"sampler": "quartiles"})

    def _masking(
        self, call: Call, groups: Any, baseline: BaselineSpec, background: Any, mask_id: int | None,
        g: torch.Generator, seed: int,
    ) -> Partial:
        x = call.x
        grp = resolve_groups(groups, x, images="superpixels")
        game, desc = make_game(call, grp, baseline=baseline, background=background, mask_id=mask_id,
                               seed=seed, batch_size=self.batch_size, name="lime",
                               method=self.name)
        act = game.masker.active()
        n, gg = act.shape
        text = not x.is_floating_point()
        s = self.n_samples or (1000 if x.ndim == 4 else 5000)
        if text:  # remove k tokens, k uniform in 1..d (lime_text)
            d = act.sum(1).view(n, 1).to(torch.float64)
            k = (torch.rand(n, s, generator=g, dtype=torch.float64).to(x.device) * d).floor() + 1
            keys = torch.rand(n, s, gg, generator=g).to(x.device).masked_fill(~act.unsqueeze(1), 2.0)
            z = keys.argsort(2).argsort(2) >= k.unsqueeze(2)
        else:
            z = torch.rand(n, s, gg, generator=g).to(x.device) < 0.5
        z[:, 0] = True
        z = z | ~act.unsqueeze(1)
        v = game.coalitions(torch.arange(n, device=x.device), z[:, 1:])
        y = torch.cat([call.outputs.to(torch.float64).unsqueeze(1), v], dim=1)
        zx = (z & act.unsqueeze(1)).to(torch.float64)
        ca = act.sum(1, keepdim=True).to(torch.float64).clamp(min=1)
        dist = 1 - (zx.sum(2) / ca).sqrt()  # cosine distance to the all-ones vector
        w = torch.exp(-(dist**2) / (self.kernel_width or 0.25) ** 2).sqrt()
        return self._fit(call, zx, y, w, grp, seed, desc)

    def _fit(
        self, call: Call, z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, grp: Any, seed: int,
        desc: dict[str, Any],
    ) -> Partial:
        coef, intercept, score, se = weighted_ridge(z, y, w, self.alpha)
        x = call.x
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return Partial(
            values=grp.expand(coef.cpu()).to(dtype),
            stderr=grp.expand(se.cpu()).to(dtype),
            seed=seed,
            groups=grp.to_dict(),
            extras={"group_values": coef.cpu().numpy(), "intercept": intercept.cpu().numpy(),
                    "score": score.cpu().numpy()},
            params=desc,
        )
