"""Shapley values of feature groups: exact, antithetic permutations, and KernelSHAP.

The players are feature groups (``groups=``: columns, patches, tokens, superpixels; see
:mod:`unveil.core.groups`); the game is the model's target score with the absent groups
replaced by a baseline, averaged over a background set (interventional), or masked with a
token id (see :mod:`unveil.attribution._value_functions`). Groups with no element in a
sample are null players there and get exactly 0.

``n_samples`` counts coalitions per explained row, the empty and full ones included (the full
coalition is the model's output at the input, already known); with a background of M rows a
coalition costs M model rows. Whenever all ``2**groups`` coalitions fit in the budget the
estimators return exact values instead of sampling. Stochastic estimators take ``seed=`` per
call (the same seed gives the same answer for any batch size) and report ``exp.stderr``.

References: Shapley (1953), "A value for n-person games"; Štrumbelj & Kononenko (2014),
"Explaining prediction models and individual predictions with feature contributions";
Lundberg & Lee (2017), "A unified approach to interpreting model predictions"; Covert & Lee
(2021), "Improving KernelSHAP"; Mitchell et al. (2022), "Sampling permutations for Shapley
value estimation".
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..core.baselines import BaselineSpec
from ..core.batching import BatchSize
from ..core.draws import resolve_seed
from ..core.options import Option
from ..core.registry import register
from ..errors import OptionError
from ._base import Attributor, Call, Partial
from ._coalitions import (
    all_coalitions,
    exact_from_table,
    kernel_design,
    permutation_design,
    permutation_estimate,
)
from ._kernel_estimators import (
    SURROGATE_MAX_COALITIONS,
    choose_degree,
    solve_kernel,
    solve_stratified,
    solve_surrogate,
)
from ._options import REFERENCE
from ._value_functions import Game, make_game, resolve_groups

__all__ = ["ExactShapley", "KernelShap", "PermutationShapley"]

_LARGE_EXACT_JOB = 1 << 18  # model rows above which exact_shapley warns and names a cheaper way


_N_SAMPLES = Option("n_samples", int, 512, "coalitions per explained row, the empty and full "
                    "ones included (exact values when 2**groups <= n_samples)", low=4)


def _classes(active: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rows grouped by their number of active groups: (active indices (1|R, c), rows (R,))."""
    counts = active.sum(1)
    out = []
    for c in sorted(set(counts.tolist())):
        rows = torch.nonzero(counts == c).flatten()
        act = active.index_select(0, rows)
        if bool((act == act[:1]).all()):
            act = act[:1]
        idx = torch.stack([torch.nonzero(a).flatten() for a in act]) if c else act[:, :0].long()
        out.append((idx, rows))
    return out


def _embed(z: np.ndarray, act_idx: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Coalitions (S, c) over a class's active groups as (1|R, S, G), inactive groups kept."""
    zt = torch.as_tensor(z, device=act_idx.device)
    r, s, c = act_idx.shape[0], zt.shape[0], zt.shape[1]
    full = torch.ones(r, s, n_groups, dtype=torch.bool, device=act_idx.device)
    full.scatter_(2, act_idx.unsqueeze(1).expand(r, s, c), zt.unsqueeze(0).expand(r, s, c))
    return full


class _Shapley(Attributor):
    """Shared driver: groups, value function, per-class estimation, and the result."""

    stochastic: ClassVar[bool] = True

    def __init__(self, model: Any, *, n_samples: int = 512, batch_size: BatchSize = "auto") -> None:
        super().__init__(model, batch_size=batch_size)
        self.n_samples = int(n_samples)

    def _estimate(
        self, game: Game, rows: torch.Tensor, act: torch.Tensor, c: int,
        v0: torch.Tensor, vfull: torch.Tensor, rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        raise NotImplementedError

    def _exact(
        self, game: Game, rows: torch.Tensor, act: torch.Tensor, c: int, v0: torch.Tensor, vfull: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        z = all_coalitions(c)[1:-1]
        v = game.coalitions(rows, _embed(z, act, game.masker.n_groups))
        table = torch.cat([v0.unsqueeze(1), v, vfull.unsqueeze(1)], dim=1)
        phi = exact_from_table(table, c)
        return phi, torch.zeros_like(phi), 2**c

    def _attribute(
        self, call: Call, *, groups: Any = None, baseline: BaselineSpec = None,
        background: Any = None, mask_id: int | None = None, seed: int | None = None,
    ) -> Partial:
        x = call.x
        grp = resolve_groups(groups, x)
        seed_ = resolve_seed(seed) if self.stochastic else (None if seed is None else resolve_seed(seed))
        game, desc = make_game(call, grp, baseline=baseline, background=background, mask_id=mask_id,
                               seed=seed_, batch_size=self.batch_size, name="coalitions",
                               method=self.name)
        n, g = x.shape[0], grp.n_groups
        v0 = game.empty(torch.arange(n, device=x.device))
        vfull = call.outputs.to(torch.float64)
        phi = torch.zeros(n, g, dtype=torch.float64, device=x.device)
        se = torch.zeros_like(phi)
        used: dict[str, int] = {}
        for act, rows in _classes(game.masker.active()):
            c = act.shape[1]
            if c == 0:
                continue
            rng = np.random.default_rng([seed_ or 0, c])
            p, s, k = self._estimate(game, rows, act, c, v0[rows], vfull[rows], rng)
            idx = act.expand(rows.shape[0], -1)
            phi[rows] = torch.zeros(rows.shape[0], g, dtype=torch.float64, device=x.device).scatter(1, idx, p)
            se[rows] = torch.zeros_like(phi[rows]).scatter(1, idx, s)
            used[str(c)] = k
        call.tick("shapley")
        return self._result(x, grp, phi, se, v0, vfull, seed_, desc, used)

    def _result(
        self, x: torch.Tensor, grp: Any, phi: torch.Tensor, se: torch.Tensor, v0: torch.Tensor,
        vfull: torch.Tensor, seed: int | None, desc: dict[str, Any], used: dict[str, int],
    ) -> Partial:
        dtype = x.dtype if x.is_floating_point() else torch.float32
        out = Partial(
            values=grp.expand(phi.cpu()).to(dtype),
            baseline_outputs=v0,
            delta=phi.sum(1) - (vfull - v0),
            seed=seed,
            groups=grp.to_dict(),
            extras={"group_values": phi.cpu().numpy()},
            meta={"coalitions_per_row": used, "groups_per_row": sorted(int(c) for c in used)},
            params=desc,
        )
        if self.stochastic:
            out.stderr = grp.expand(se.cpu()).to(dtype)
            out.add(extras={"group_stderr": se.cpu().numpy()})
        return out


@register(
    "exact_shapley", family="shapley", display_name="Exact Shapley", signed=True,
    takes_seed=True, common=("background",),
    options=(Option("max_groups", int, 20, "refuse more active groups per sample than this "
                    "(2**groups coalitions per row)", low=1, high=30), *REFERENCE),
)
class ExactShapley(_Shapley):
    """Exact Shapley values of feature groups from all ``2**groups`` coalitions.

    Parameters
    ----------
    max_groups : int
        Refuse more active groups than this per sample (default 20: about a million
        coalitions per row, each M model rows with a background of M rows).

    Call with ``groups=`` (default: columns, 8x8 patches or tokens), ``baseline=`` or
    ``background=`` (interventional mean over its rows) or ``mask_id=`` for token ids.
    ``exp.values`` repeats each group's value on its elements; ``exp.extras["group_values"]``
    holds the (N, G) values. Shapley (1953).
    """

    stochastic: ClassVar[bool] = False

    def __init__(self, model: Any, *, max_groups: int = 20, batch_size: BatchSize = "auto") -> None:
        Attributor.__init__(self, model, batch_size=batch_size)
        self.max_groups = int(max_groups)

    def _estimate(
        self, game: Game, rows: torch.Tensor, act: torch.Tensor, c: int,
        v0: torch.Tensor, vfull: torch.Tensor, rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        if c > self.max_groups:
            raise OptionError(
                f"exact Shapley values over {c} groups need 2**{c} coalitions per row; use "
                f"'kernel_shap' or 'permutation_shapley', fewer groups (groups=), or raise "
                f"max_groups (now {self.max_groups})"
            )
        cost = 2**c * rows.shape[0] * game.rows_per_eval
        if cost > _LARGE_EXACT_JOB:
            warnings.warn(
                f"exact_shapley: {c} groups need 2**{c} coalitions per row, {cost:,} model rows for "
                f"these {rows.shape[0]} row(s); 'kernel_shap' with n_samples=2048 is usually within "
                "1% of exact at a small fraction of the cost",
                UserWarning, stacklevel=5,
            )
        return self._exact(game, rows, act, c, v0, vfull)


@register("permutation_shapley", family="shapley", stochastic=True,
          display_name="Permutation Shapley", signed=True, common=("background",),
          options=(_N_SAMPLES, *REFERENCE))
class PermutationShapley(_Shapley):
    """Shapley values by antithetic permutation sampling (Štrumbelj & Kononenko, 2014).

    Each sampled permutation is paired with its reverse (Mitchell et al., 2022); the value of
    a group is its mean marginal contribution along the permutations. Coalitions shared by
    several permutations are evaluated once, so ``n_samples`` (coalitions per row, empty and
    full included; default 512) buys as many permutations as fit. Exact when
    ``2**groups <= n_samples``. ``exp.stderr`` is the standard error over antithetic pairs.
    Call options as for :class:`ExactShapley`, plus ``seed=``.
    """

    def _estimate(
        self, game: Game, rows: torch.Tensor, act: torch.Tensor, c: int,
        v0: torch.Tensor, vfull: torch.Tensor, rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        if 2**c <= self.n_samples:
            return self._exact(game, rows, act, c, v0, vfull)
        design = permutation_design(c, self.n_samples, rng)
        if design.perms.shape[0] == 0:
            raise OptionError(
                f"n_samples={self.n_samples} is too small for {c} groups: one antithetic pair of "
                f"permutations needs {2 * c} coalitions per row"
            )
        v = game.coalitions(rows, _embed(design.z, act, game.masker.n_groups))
        phi, se = permutation_estimate(design, v, v0, vfull)
        return phi, se, int(design.z.shape[0]) + 2


@register(
    "kernel_shap", family="shapley", stochastic=True, display_name="Kernel SHAP", signed=True,
    common=("background",), preferred_for={"tabular": 1},
    options=(
        _N_SAMPLES,
        Option("estimator", Literal["surrogate", "stratified", "wls"], "surrogate", "'surrogate' "
               "(a fitted game with known Shapley values plus 'stratified' on its residuals), "
               "'stratified' (a regression estimator per coalition size) or 'wls' (the classic "
               "kernel fit)"),
        Option("sampling", Literal["kernel", "leverage"], "leverage", "share of the budget per "
               "coalition size: equal (leverage scores) or by the Shapley kernel's mass"),
        *REFERENCE,
    ),
)
class KernelShap(_Shapley):
    """Shapley values by KernelSHAP (Lundberg & Lee, 2017): regression of the values of
    sampled coalitions on the coalitions, with the Shapley kernel.

    Parameters
    ----------
    n_samples : int
        Coalitions per explained row, the empty and full ones included (default 512). Exact
        values when ``2**groups <= n_samples``.
    estimator : str
        ``"surrogate"`` (default), ``"stratified"`` or ``"wls"``. ``"wls"`` is the classic
        estimator: one weighted least-squares fit of ``v(S) - v(empty)`` on the coalition
        indicators with the Shapley-kernel weights and the efficiency constraint
        ``sum(values) = f(x) - v(empty)`` (Charnes et al., 1988). ``"stratified"`` treats
        coalition sizes as strata: sizes enumerated in full enter the exact Shapley formula as
        they are; for sampled sizes a linear model with one intercept per size and slopes
        quadratic in the size gives the stratum means the formula needs, plus the mean
        residuals (a generalised regression estimator, Särndal et al., 1992; approximately
        unbiased whatever the game). ``"surrogate"`` is a regression-adjusted (control-variate)
        estimator: an additive fit plus kernel ridge regression on the coalitions (kernel
        ``rho**hamming``, width and ridge by leave-one-out error) is fitted to all evaluated
        coalitions; its Shapley values are exact in closed form, and ``"stratified"`` estimates
        those of the residual game from leave-one-out residuals. Paired sampling already
        cancels the even-order part of a game; the surrogate removes much of the odd
        higher-order part that remains. On three MLPs of 10-14 inputs its error at 512
        coalitions is about a quarter of shap's KernelExplainer's (``l1_reg=False``) and half
        of ``"stratified"``'s (benchmarks/bench_shapley.py); its bias is of order ``1 /
        n_samples``, small against its spread. Used up to 2500 coalitions (above, the kernel
        fit costs more than it gains and ``"stratified"`` is used). With too few coalitions
        for the size model (fewer than about ``2 (sizes + groups)``), the ``"wls"`` fit
        replaces ``"stratified"``.
    sampling : str
        ``"leverage"`` (default) shares the budget equally among coalition sizes
        (leverage-score sampling, Musco & Witter 2025); ``"kernel"`` by the Shapley kernel's
        mass.

    Coalitions come in complementary pairs (paired sampling, Covert & Lee 2021); a size whose
    share of the budget covers all its coalitions is enumerated exactly (as shap does), the
    others are sampled without replacement and weighted by their stratum's kernel mass. The
    efficiency constraint holds exactly with every estimator. ``exp.stderr`` is a stratified
    sandwich (delta-method) standard error over the sampled pairs (of the residual game's
    estimate, for ``"surrogate"``). Call options as for
    :class:`ExactShapley`, plus ``seed=``.
    """

    def __init__(
        self,
        model: Any,
        *,
        n_samples: int = 512,
        estimator: Literal["surrogate", "stratified", "wls"] = "surrogate",
        sampling: Literal["kernel", "leverage"] = "leverage",
        batch_size: BatchSize = "auto",
    ) -> None:
        super().__init__(model, n_samples=n_samples, batch_size=batch_size)
        self.estimator = estimator
        self.sampling = sampling

    def _estimate(
        self, game: Game, rows: torch.Tensor, act: torch.Tensor, c: int,
        v0: torch.Tensor, vfull: torch.Tensor, rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        if 2**c <= self.n_samples:
            return self._exact(game, rows, act, c, v0, vfull)
        if self.n_samples < c + 2:
            raise OptionError(
                f"n_samples={self.n_samples} is too small for {c} groups: KernelSHAP needs at "
                f"least {c + 2} coalitions per row (a few times more for useful accuracy)"
            )
        degree = choose_degree(c, self.n_samples, self.sampling) if self.estimator != "wls" else None
        design = kernel_design(c, self.n_samples, rng, self.sampling, balanced=degree is not None)
        v = game.coalitions(rows, _embed(design.z, act, game.masker.n_groups))
        if self.estimator == "surrogate" and design.z.shape[0] + 2 <= SURROGATE_MAX_COALITIONS:
            phi, se = solve_surrogate(design, v, v0, vfull, degree)
        elif degree is None:
            phi, se = solve_kernel(design, v - v0.unsqueeze(1), vfull - v0)
        else:
            phi, se = solve_stratified(design, v, v0, vfull, degree)
        return phi, se, int(design.z.shape[0]) + 2
