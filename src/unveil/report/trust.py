"""The trust card (faithfulness, sanity, agreement) and the global section of a report.

Faithfulness and sanity verdicts come from :func:`unveil.metrics.trust_card` and any extra
figures from :func:`unveil.metrics.evaluate`, when :mod:`unveil.metrics` is installed; the
report only reads them. Agreement between the methods of a report is measured here, on
``|attribution|``, from the maps already computed (no re-explaining).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.model import Model
from ._stats import Agreement, agreement
from .render import display_kind, map_for_agreement

if TYPE_CHECKING:
    from ._builder import MethodRun

__all__ = ["GlobalFacts", "TrustCard", "figures", "global_facts", "sample_agreement", "trust_card"]

log = logging.getLogger("unveil.report")
Verdicts = dict[str, dict[str, Any]]  # check -> {"answer": bool | None, "rule": str, "figures": {}}


@dataclass
class TrustCard:
    """What speaks for or against trusting the maps of one section.

    ``verdicts[method][check]`` holds the metrics trust card's answer (``"faithful"``,
    ``"sanity"`` ...), its rule and figures; ``quality[method]`` extra metric values;
    ``agreement`` the mean pairwise agreement of the methods over the inputs.
    """

    verdicts: dict[str, Verdicts] = field(default_factory=dict)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    agreement: Agreement | None = None
    samples: list[Agreement] = field(default_factory=list)

    def answer(self, method: str, check: str) -> bool | None:
        """The verdict of ``check`` for ``method`` (None if not run or not judged)."""
        v = self.verdicts.get(method, {}).get(check)
        return None if v is None else v.get("answer")


@dataclass
class GlobalFacts:
    """Model-level facts: mean importance per feature, and a surrogate's rules."""

    importance: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    rules: str | None = None
    fidelity: float | None = None
    note: str | None = None


def _scalar(v: Any) -> float | None:
    if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(v)
    return None


def figures(quality: dict[str, Any]) -> dict[str, float]:
    """Named scalars from ``exp.quality``: each metric's batch ``value`` (plain numbers kept;
    the trust card and arrays left out)."""
    out: dict[str, float] = {}
    for k, v in quality.items():
        if k == "trust":
            continue
        if isinstance(v, dict) and "value" in v:
            v = v["value"]
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        s = _scalar(v)
        if s is not None:
            out[k] = s
    return out


def sample_agreement(runs: Sequence[MethodRun], i: int) -> Agreement | None:
    """Agreement of the methods that ran, on sample ``i``."""
    maps = {r.method: map_for_agreement(r.explanation, i) for r in runs if r.explanation is not None}
    return agreement(maps) if len(maps) >= 2 else None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _checks_for(run: MethodRun, checks: Sequence[str], sanity: bool | Sequence[str]) -> list[str]:
    from ..core.registry import get_method

    out = [c for c in checks if c != "sanity"]
    wants = get_method(run.method).needs_gradients if isinstance(sanity, bool) else run.method in sanity
    if sanity and wants or (not sanity and "sanity" in checks):
        out.append("sanity")
    return out


def _verdicts(model: Model, runs: Sequence[MethodRun], checks: Sequence[str],
              sanity: bool | Sequence[str], metrics: Sequence[str] | None, card: TrustCard,
              options: dict[str, Any]) -> None:
    try:
        from ..metrics import evaluate
        from ..metrics import trust_card as metrics_card
    except ImportError:
        card.notes.append("faithfulness and sanity verdicts unavailable: unveil.metrics is not installed")
        return
    failed = []
    for r in runs:
        if r.explanation is None:
            continue
        todo = _checks_for(r, checks, sanity)
        try:
            if todo:
                tc = metrics_card(model.obj, r.explanation, checks=todo, **{"seed": 0, **options})
                card.verdicts[r.method] = {
                    k: {"answer": v.answer, "rule": v.rule, "figures": dict(v.figures)}
                    for k, v in tc.verdicts.items()}
            if metrics:
                evaluate(model.obj, r.explanation, metrics=list(metrics))
        except Exception as exc:  # a metric that fails is reported as missing, not fatal
            failed.append(f"{r.method}: {_first_line(exc)}")
            continue
        card.quality[r.method] = figures(r.explanation.quality)
    if failed:
        card.notes.append("some figures could not be computed (" + "; ".join(failed) + ")")


def trust_card(
    model: Model, x: torch.Tensor, runs: Sequence[MethodRun], *, evaluate: bool,
    checks: Sequence[str] = ("faithful",), metrics: Sequence[str] | None = None,
    sanity: bool | Sequence[str] = False, options: dict[str, Any] | None = None,
) -> TrustCard:
    """Verdicts, extra metric figures and method agreement for one section; ``options`` go to
    :func:`unveil.metrics.trust_card` (e.g. ``n_steps`` of the deletion curves)."""
    card = TrustCard()
    if evaluate:
        _verdicts(model, runs, checks, sanity, metrics, card, dict(options or {}))
    ok = [r for r in runs if r.explanation is not None]
    if len(ok) >= 2:
        card.samples = [a for i in range(x.shape[0]) if (a := sample_agreement(ok, i)) is not None]
        if card.samples:
            ranks = np.stack([a.rank for a in card.samples])
            tops = np.stack([a.top_k for a in card.samples])
            with np.errstate(all="ignore"):
                first = card.samples[0]
                card.agreement = Agreement(first.methods, np.nanmean(ranks, 0),
                                           np.nanmean(tops, 0), first.k, first.size)
    return card


def _importance(runs: Sequence[MethodRun], top_k: int = 10) -> dict[str, list[tuple[str, float]]]:
    from .render import element_values

    out: dict[str, list[tuple[str, float]]] = {}
    for r in runs:
        e = r.explanation
        if e is None or display_kind(e) != "table":
            continue
        v = np.abs(element_values(e)).reshape(len(e), -1).mean(0)
        names = e.feature_names if e.feature_names and len(e.feature_names) == v.size else [
            f"feature {j}" for j in range(v.size)]
        order = np.argsort(-v, kind="stable")[:top_k]
        out[r.method] = [(str(names[j]), float(v[j])) for j in order]
    return out


def global_facts(model: Model, runs: Sequence[MethodRun], *, data: Any = None,
                 feature_names: Sequence[str] | None = None,
                 class_names: Sequence[str] | None = None,
                 data_units: tuple[Any, Callable[[Any], Any]] | None = None) -> GlobalFacts:
    """Mean |attribution| per feature (tables), and a depth-3 tree surrogate of the model fitted
    on ``data`` (tables, when :mod:`unveil.surrogate` is installed), with its fidelity on the
    rows of ``data`` it held out. With ``data_units = (rows, preprocess)`` the surrogate is
    fitted on those rows, read in their units, and the model sees ``preprocess(rows)``."""
    facts = GlobalFacts(importance=_importance(runs))
    preprocess = None
    if data_units is not None:
        data, preprocess = data_units
    if data is None or np.ndim(np.asarray(data)) != 2:
        return facts
    try:
        from ..surrogate import distill
    except ImportError:
        facts.note = "surrogate rules unavailable: unveil.surrogate is not installed"
        return facts
    try:
        kw: dict[str, Any] = {"feature_names": list(feature_names)} if feature_names else {}
        if class_names:
            kw["class_names"] = list(class_names)
        if preprocess is not None:
            kw["preprocess"] = preprocess
        sur = distill(model.obj, data, kind="tree", max_depth=3, **kw)
        facts.rules = str(sur.rules())
        facts.fidelity = float(sur.fidelity())
    except Exception as exc:  # the global section is optional; say why it is missing
        facts.note = f"surrogate unavailable: {_first_line(exc)}"
        log.info("surrogate failed: %s", exc)
    return facts
