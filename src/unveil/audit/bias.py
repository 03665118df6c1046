"""Bias audit of a classifier on a table, with a sensitive attribute.

Four kinds of evidence, each compared with a stated threshold (:class:`AuditThresholds`):

1. **Outcomes by group** (fairlearn): selection rate, and with true labels TPR, FPR, accuracy
   and base rate per group; the demographic-parity and equalized-odds differences.
2. **Attribution share**: each column's share of the mean |attribution| of the positive score
   (interventional Shapley values by default; Lundberg & Lee, 2017). The share of the sensitive
   column says how much the model *uses* it; the share of its proxies, how much it uses
   stand-ins for it (Adler et al., 2018, "Auditing black-box models for indirect influence").
3. **Proxies**: columns from which the attribute can be predicted (see :mod:`._proxies`).
4. **Counterfactual flips**: the share of (row, other group) pairs whose predicted class changes
   when only the sensitive column is set to the other group's value (a ceteris-paribus test;
   cf. Kusner et al., 2017, "Counterfactual fairness"), and again when the proxies are moved
   too, each by quantile mapping onto the other group's distribution.
5. **Recourse** (optional, ``recourse=n``): for ``n`` rows refused the favourable decision, the
   nearest change that obtains it with the sensitive column immutable
   (:func:`unveil.counterfactual.counterfactuals`), and its cost by group: a group that must
   change more for the same decision bears a burden (Sharma et al., 2020, "CERTIFAI").

A flag is raised when a figure reaches its threshold; the verdict is ``"fail"`` when the model
uses the sensitive column itself, ``"review"`` when it leans on proxies or outcomes differ
between groups, ``"pass"`` otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..core.batching import BatchSize
from ..errors import InputError, OptionError
from ..surrogate.blackbox import (
    as_table,
    class_labels,
    query,
    resolve_feature,
    true_labels,
    with_preprocess,
    wrap,
)
from ..surrogate.global_importance import (
    GlobalImportance,
    permutation_importance,
    shapley_importance,
)
from ._counterfactual import flip_rates
from ._fairness import group_label, group_metrics
from ._proxies import ProxyInfo, find_proxies

__all__ = ["MAX_GROUPS", "AuditThresholds", "BiasAudit", "Flag", "bias_audit"]

MAX_GROUPS = 20  # most distinct values a sensitive attribute may take (bin a continuous one)


@dataclass(frozen=True)
class AuditThresholds:
    """The thresholds a figure must reach to raise a flag.

    attribution_share : a column's share of the mean |attribution| (default 0.05)
    flip_rate : share of counterfactual pairs whose predicted class changes (default 0.02)
    proxy_auc : cross-validated AUC of predicting the attribute from one column (default 0.70)
    parity_difference : demographic-parity or equalized-odds difference (default 0.10)
    """

    attribution_share: float = 0.05
    flip_rate: float = 0.02
    proxy_auc: float = 0.70
    parity_difference: float = 0.10


@dataclass
class Flag:
    """One figure that reached its threshold."""

    kind: Literal["sensitive", "proxy", "disparity"]
    feature: str | None
    figure: str
    value: float
    threshold: float

    def __str__(self) -> str:
        who = f"{self.feature}: " if self.feature else ""
        return f"[{self.kind}] {who}{self.figure} {self.value:.3f} >= {self.threshold:g}"


@dataclass
class BiasAudit:
    """The result of :func:`bias_audit`: the figures, the flags and the verdict."""

    sensitive: str
    groups: list[str]
    n_rows: int
    positive: int
    group_metrics: dict[str, dict[str, float]]
    demographic_parity_difference: float
    equalized_odds_difference: float | None
    attribution_method: str
    attribution_shares: dict[str, float]
    sensitive_share: float | None
    proxies: list[ProxyInfo]
    proxy_share: float
    reconstruction_auc: float
    flip_rate: float | None
    flip_rate_with_proxies: float | None
    thresholds: AuditThresholds
    flags: list[Flag] = field(default_factory=list)
    verdict: str = "pass"
    #: names of the model's classes (``class_names[positive]`` names the favourable decision)
    class_names: list[str] | None = None
    #: readable names of the groups, by group label (``{"1": "not religious"}``)
    group_names: dict[str, str] | None = None
    #: recourse for refused rows (``recourse=n``): per group the rows, the share with a
    #: counterfactual and its mean L1 cost and columns changed, and example sentences
    recourse: dict[str, Any] | None = None

    @property
    def decision(self) -> str:
        """The favourable decision by its class name (``class 1`` when no names are known)."""
        names = self.class_names
        return names[self.positive] if names and 0 <= self.positive < len(names) else f"class {self.positive}"

    def group_name(self, group: str) -> str:
        """A group as a reader knows it: its name and value (``not religious (religious = 1)``),
        or ``religious = 1`` when the groups have no names."""
        name = (self.group_names or {}).get(str(group))
        value = f"{self.sensitive} = {group}"
        return f"{name} ({value})" if name else value

    @property
    def flagged_features(self) -> list[str]:
        """Columns raising a sensitive or proxy flag."""
        return sorted({f.feature for f in self.flags if f.feature is not None and f.kind != "disparity"})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out = asdict(self)
        out["flagged_features"] = self.flagged_features
        return out

    def to_html(self, *, title: str | None = None) -> str:
        """One self-contained HTML page for reviewers: the verdict in plain words, then every
        figure beside its threshold, the outcomes by group, attribution shares and proxies."""
        from ..report.audit_page import (
            audit_html,  # the permitted upward call, as Explanation.to_html
        )

        return audit_html(self, title=title)

    def save(self, path: str | Path) -> Path:
        """Write the audit as ``.html`` (:meth:`to_html`) or ``.json`` (:meth:`to_dict`)."""
        p = Path(path)
        if p.suffix.lower() not in (".html", ".htm", ".json"):
            raise OptionError(f"an audit is saved as .html or .json, got {p.name!r}")
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix.lower() == ".json":
            from ..core.explanation import jsonable

            p.write_text(json.dumps(jsonable(self.to_dict()), indent=2), encoding="utf-8")
        else:
            p.write_text(self.to_html(), encoding="utf-8")
        return p

    def summary(self) -> str:
        """A short text: verdict, flags, and the figures behind them."""
        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        lines = [f"bias audit of {self.sensitive!r} ({len(self.groups)} groups, {self.n_rows} rows): "
                 f"{self.verdict.upper()}"]
        lines += [f"  {flag}" for flag in self.flags] or ["  no figure reached its threshold"]
        rates = ", ".join(f"{g}: {m['selection_rate']:.3f}" for g, m in self.group_metrics.items())
        lines.append(f"  selection rate by group: {rates}")
        lines.append(f"  demographic parity difference {f(self.demographic_parity_difference)}, "
                     f"equalized odds difference {f(self.equalized_odds_difference)}")
        proxies = ", ".join(f"{p.feature} (AUC {p.auc:.2f})" for p in self.proxies if p.is_proxy) or "none"
        lines.append(f"  attribution share ({self.attribution_method}): sensitive {f(self.sensitive_share)}, "
                     f"proxies {f(self.proxy_share)}; proxies: {proxies}")
        lines.append(f"  counterfactual flip rate {f(self.flip_rate)}, with proxies moved "
                     f"{f(self.flip_rate_with_proxies)}")
        return "\n".join(lines)

    __str__ = summary


def _sensitive(sensitive: Any, Xa: np.ndarray, names: list[str], name: str | None) -> tuple[np.ndarray, int | None, str]:
    """The group of every row, the sensitive column (None if given as an array) and its name."""
    if isinstance(sensitive, (str, int, np.integer)) and not isinstance(sensitive, bool):
        col = resolve_feature(sensitive if isinstance(sensitive, str) else int(sensitive), names)
        return Xa[:, col], col, names[col]
    s = np.asarray(sensitive.cpu() if hasattr(sensitive, "cpu") else sensitive)
    if s.ndim != 1 or s.shape[0] != Xa.shape[0]:
        raise InputError(f"sensitive must be a column (index or name) or one value per row "
                         f"({Xa.shape[0]}), got shape {s.shape}")
    return s, None, name or "sensitive"


def _attribution(
    m: Any, Xa: np.ndarray, names: list[str], attribution: Any, target: int | None, *,
    n_explain: int, n_background: int, n_samples: int, threshold: float | None, seed: int,
    batch_size: BatchSize,
) -> tuple[str, np.ndarray]:
    """(method name, importance per column >= 0)."""
    if isinstance(attribution, GlobalImportance):
        return attribution.method, np.clip(attribution.importances, 0, None)
    if not isinstance(attribution, str):
        imp = np.abs(np.asarray(attribution, dtype=np.float64))
        imp = imp.mean(axis=0) if imp.ndim == 2 else imp
        if imp.shape != (Xa.shape[1],):
            raise InputError(f"attribution must be (N, {Xa.shape[1]}) or ({Xa.shape[1]},), got {imp.shape}")
        return "given", imp
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(Xa.shape[0], size=min(n_explain, Xa.shape[0]), replace=False))
    if attribution == "shapley":
        gi = shapley_importance(m, Xa[rows], target=target, feature_names=names, n_background=n_background,
                                seed=seed, n_samples=n_samples, batch_size=batch_size)
        return "kernel_shap", gi.importances
    if attribution == "permutation":
        gi = permutation_importance(m, Xa, feature_names=names, threshold=threshold, seed=seed,
                                    engine="unveil", batch_size=batch_size)
        return "permutation", np.clip(gi.importances, 0, None)
    raise OptionError(f"attribution must be 'shapley', 'permutation', a GlobalImportance or an "
                      f"array of attributions, got {attribution!r}")


def bias_audit(
    model: Any, X: Any, *, sensitive: Any, y: Any = None, feature_names: Sequence[str] | None = None,
    sensitive_name: str | None = None, positive: Any = 1, threshold: float | None = None,
    attribution: Any = "shapley", n_explain: int = 200, n_background: int = 32, n_samples: int = 256,
    thresholds: AuditThresholds | None = None, seed: int = 0, preprocess: Any = None,
    batch_size: BatchSize = "auto", class_names: Sequence[str] | None = None,
    group_names: dict[Any, str] | None = None, recourse: int = 0,
) -> BiasAudit:
    """Audit ``model`` for reliance on a sensitive attribute.

    Parameters
    ----------
    model : classifier — torch module, scikit-learn estimator or callable
    X : table (N, F) of the model's inputs (array, tensor or DataFrame)
    sensitive : the sensitive column (index or name), or one group value per row when the
        attribute is not an input (then no counterfactual flips and no direct share)
    y : true labels (class indices; a scikit-learn classifier's own labels), for TPR/FPR,
        accuracy and equalized odds
    positive : the class that is the favourable decision (default 1): an output index, or a
        scikit-learn classifier's label
    threshold : for a model with one score per row, labels are ``score > threshold``
    attribution : ``"shapley"`` (KernelSHAP of the positive score over ``n_explain`` rows with
        ``n_background`` background rows; exact when ``2**F <= n_samples``), ``"permutation"``,
        a :class:`GlobalImportance`, or attributions (N, F) / (F,)
    thresholds : :class:`AuditThresholds` (defaults stated there)
    preprocess : function of the table's rows (N, F) -> the model's inputs, optional: audit in
        the table's own units (groups ``0``/``1``, not standardised codes) while the model is
        queried on ``preprocess(X)``
    class_names : names of the model's classes, so that the page names the favourable decision
        (``"approved"``) rather than its index
    group_names : readable names of the sensitive attribute's values, e.g. ``{1: "not religious"}``
    recourse : for up to this many rows refused the favourable decision (drawn with ``seed``),
        search the nearest change that obtains it with the sensitive column immutable, and
        compare its cost between groups (default 0: no search)

    Returns
    -------
    BiasAudit
    """
    th = thresholds or AuditThresholds()
    m = wrap(model)
    Xa, names = as_table(X, feature_names)
    s, col, sname = _sensitive(sensitive, Xa, names, sensitive_name)
    groups = np.unique(s)
    if not 2 <= groups.size <= MAX_GROUPS:
        raise InputError(f"the sensitive attribute has {groups.size} distinct values; an audit needs 2 to {MAX_GROUPS} "
                         "groups (bin a continuous attribute first)")
    ya = None if y is None else true_labels(y, Xa.shape[0], m)
    positive = int(true_labels([positive], 1, m, what="positive")[0])
    if preprocess is not None:
        m = with_preprocess(m, preprocess)
    scores = query(m, Xa, batch_size=batch_size)
    labels = class_labels(scores, threshold, what="the audited model")
    n_classes = scores.shape[1] if scores.ndim == 2 else 2
    if not 0 <= positive < n_classes:
        raise OptionError(f"positive={positive} is not a class of a model with {n_classes} classes; "
                          f"pass an index in 0..{n_classes - 1}")
    by_group, dp, eo = group_metrics(labels == positive, s, None if ya is None else ya == positive)
    target = positive if scores.ndim == 2 else None
    method, imp = _attribution(m, Xa, names, attribution, target, n_explain=n_explain, n_background=n_background,
                               n_samples=n_samples, threshold=threshold, seed=seed, batch_size=batch_size)
    total = float(imp.sum())
    shares = {n: (float(v) / total if total > 0 else 0.0) for n, v in zip(names, imp)}
    others = [j for j in range(Xa.shape[1]) if j != col]
    proxies, recon = find_proxies(Xa, s, names, others, auc_threshold=th.proxy_auc, seed=seed)
    for p in proxies:
        p.attribution_share = shares[p.feature]
    flip = flip_p = None
    if col is not None:
        flip, flip_p = flip_rates(m, Xa, col, [p.index for p in proxies if p.is_proxy], labels,
                                  threshold, batch_size)
    audit = BiasAudit(sname, [group_label(g) for g in groups], int(Xa.shape[0]), positive, by_group, dp, eo,
                      method, shares, None if col is None else shares[names[col]], proxies,
                      float(sum(shares[p.feature] for p in proxies if p.is_proxy)), recon, flip, flip_p, th,
                      class_names=None if class_names is None else [str(c) for c in class_names],
                      group_names=None if group_names is None else {
                          group_label(k): str(v) for k, v in group_names.items()})
    if recourse and col is not None:
        audit.recourse = _recourse(m, Xa, names, col, labels, positive, threshold, int(recourse), seed,
                                   audit.class_names, batch_size)
    _judge(audit)
    return audit


def _recourse(m: Any, Xa: np.ndarray, names: list[str], col: int, labels: np.ndarray, positive: int,
              threshold: float | None, n: int, seed: int, class_names: list[str] | None,
              batch_size: BatchSize) -> dict[str, Any] | None:
    """Counterfactuals of refused rows (sensitive column immutable), summarised by group."""
    from ..counterfactual import Constraints, counterfactuals

    refused = np.flatnonzero(labels != positive)
    if refused.size == 0:
        return None
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(refused, size=min(n, refused.size), replace=False))
    cf = counterfactuals(m, Xa[rows], data=Xa, desired=positive, threshold=threshold, feature_names=names,
                         class_names=class_names, constraints=Constraints(immutable=[names[col]]), seed=seed,
                         batch_size=batch_size)
    groups = Xa[rows, col]
    by_group: dict[str, dict[str, float]] = {}
    for g in np.unique(groups):
        sel = groups == g
        ok = cf.found[sel]
        by_group[group_label(g)] = {
            "rows": int(sel.sum()), "with_recourse": float(ok.mean()),
            "mean_cost": float(cf.l1[sel, 0][ok].mean()) if ok.any() else float("nan"),
            "mean_changed": float(cf.l0[sel, 0][ok].mean()) if ok.any() else float("nan")}
    examples = [cf.recourse(i) for i in np.flatnonzero(cf.found)[:3]]
    return {"n_rows": int(rows.size), "by_group": by_group, "examples": examples,
            "metrics": {k: v for k, v in cf.metrics.items() if k in ("validity", "l0", "l1", "violations")},
            "method": cf.method}


def _judge(a: BiasAudit) -> None:
    """Raise the flags whose figures reach their thresholds, and set the verdict."""
    th, flags = a.thresholds, a.flags
    if a.sensitive_share is not None and a.sensitive_share >= th.attribution_share:
        flags.append(Flag("sensitive", a.sensitive, "attribution share", a.sensitive_share, th.attribution_share))
    if a.flip_rate is not None and a.flip_rate >= th.flip_rate:
        flags.append(Flag("sensitive", a.sensitive, "counterfactual flip rate", a.flip_rate, th.flip_rate))
    for p in a.proxies:
        if p.is_proxy and p.attribution_share is not None and p.attribution_share >= th.attribution_share:
            flags.append(Flag("proxy", p.feature, f"attribution share (proxy AUC {p.auc:.2f})",
                              p.attribution_share, th.attribution_share))
    if a.flip_rate is not None and a.flip_rate_with_proxies is not None:
        extra = a.flip_rate_with_proxies - a.flip_rate
        if extra >= th.flip_rate:
            flags.append(Flag("proxy", None, "extra flip rate with proxies moved", extra, th.flip_rate))
    if a.demographic_parity_difference >= th.parity_difference:
        flags.append(Flag("disparity", None, "demographic parity difference",
                          a.demographic_parity_difference, th.parity_difference))
    if a.equalized_odds_difference is not None and a.equalized_odds_difference >= th.parity_difference:
        flags.append(Flag("disparity", None, "equalized odds difference",
                          a.equalized_odds_difference, th.parity_difference))
    kinds = {f.kind for f in flags}
    a.verdict = "fail" if "sensitive" in kinds else ("review" if kinds else "pass")
