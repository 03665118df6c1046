"""A trust card: four plain questions about an explanation, each answered with the figures
behind it and the rule that turned them into yes or no.

- *Faithful?* One rule: the *faithfulness margin* — insertion AUC minus deletion AUC (Petsiuk
  et al., 2018) in the map's order, minus the same in a random order — is above zero on average
  AND for at least half of the samples: removing what the map ranks first lowers the target
  score faster, and inserting it raises the score faster, than chance. "yes" always comes with a
  positive margin, "no" with a margin at or below zero or a minority of samples beating chance.
  A map that is constant (all zero, say) for a sample ranks nothing and never counts as
  faithful; when every sample's map is constant the answer is "no", with that reason.
- *Robust?* The map changes by less than ``robust_threshold`` of its norm under small input noise
  (max-sensitivity, Yeh et al., 2019).
- *Passes sanity?* The map changes once the upper half of the layers is randomised, and the
  map of a model with every layer randomised is unlike the original (cascading randomisation,
  Adebayo et al., 2018).
- *Methods agree?* Other methods rank the features similarly (Spearman rank correlation).

The thresholds are conventions, not laws; every figure is shown so a reader can judge.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.explanation import Explanation
from ..core.quality import degenerate_rows
from ..errors import OptionError, UnveilError
from ._common import _plain
from .agreement import agreement
from .faithfulness import deletion, insertion
from .robustness import max_sensitivity
from .sanity import sanity_metric

__all__ = ["CHECKS", "TrustCard", "Verdict", "trust_card"]

CHECKS = ("faithful", "robust", "sanity", "agree")
_QUESTIONS = {"faithful": "Faithful?", "robust": "Robust?", "sanity": "Passes sanity checks?",
              "agree": "Do methods agree?"}


@dataclass
class Verdict:
    """One answered question: ``answer`` is True, False, or None when it could not be judged."""

    question: str
    answer: bool | None
    rule: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def word(self) -> str:
        return {True: "yes", False: "no", None: "unknown"}[self.answer]


@dataclass
class TrustCard:
    """Answers to the four questions about one explanation (see :func:`trust_card`)."""

    method: str
    n_samples: int
    verdicts: dict[str, Verdict]

    @property
    def trusted(self) -> bool | None:
        """True when every answer is yes; False when any is no; None otherwise."""
        answers = [v.answer for v in self.verdicts.values()]
        if any(a is False for a in answers):
            return False
        return True if answers and all(a is True for a in answers) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what ``exp.quality["trust"]`` holds)."""
        return {"method": self.method, "n_samples": self.n_samples, "trusted": self.trusted,
                "verdicts": {k: {"question": v.question, "answer": v.answer, "rule": v.rule,
                                 "figures": _plain(v.figures)} for k, v in self.verdicts.items()}}

    def __str__(self) -> str:
        lines = [f"trust card: {self.method!r} on {self.n_samples} samples"]
        for v in self.verdicts.values():
            figs = ", ".join(f"{k}={_fmt(x)}" for k, x in v.figures.items() if not isinstance(x, dict))
            lines.append(f"  {v.question:<24}{v.word:<8}{figs}")
            lines.append(f"  {'':<24}rule: {v.rule}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(v.question)}</td><td><b>{v.word}</b></td>"
            f"<td>{html.escape(', '.join(f'{k}={_fmt(x)}' for k, x in v.figures.items() if not isinstance(x, dict)))}"
            f"</td><td>{html.escape(v.rule)}</td></tr>" for v in self.verdicts.values())
        return (f"<table><caption>trust card: {html.escape(self.method)}</caption>"
                f"<tr><th>question</th><th>answer</th><th>figures</th><th>rule</th></tr>{rows}</table>")


def _fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _faithful(model: Any, exp: Explanation, opts: Mapping[str, Any]) -> Verdict:
    flat = degenerate_rows(exp.values)
    rule = ("faithfulness margin (insertion AUC minus deletion AUC, minus the same for a random "
            "order) above zero on average and for at least half of the samples")
    if flat.all():
        return Verdict(_QUESTIONS["faithful"], False, rule + "; a constant map ranks nothing",
                       {"degenerate_samples": int(flat.sum()), "faithfulness_margin": 0.0})
    if flat.any():
        exp = exp[np.flatnonzero(~flat)]
    kw = {"n_steps": opts.get("n_steps", 20), "seed": opts.get("seed", 0)}
    d = deletion(model, exp, **kw)
    dr = deletion(model, exp, order="random", **kw)
    i = insertion(model, exp, **kw)
    ir = insertion(model, exp, order="random", **kw)
    score = i.per_sample - d.per_sample  # insertion minus deletion area: high when faithful
    chance = ir.per_sample - dr.per_sample
    margin = float(np.nanmean(score - chance))
    beating = float(np.mean(score > chance))
    ok = margin > 0 and beating >= 0.5
    return Verdict(_QUESTIONS["faithful"], bool(ok), rule,
                   {"faithfulness_margin": margin, "degenerate_samples": int(flat.sum()),
                    "insertion_minus_deletion": float(np.nanmean(score)),
                    "random_order": float(np.nanmean(chance)),
                    "deletion_auc": d.value, "random_deletion_auc": dr.value,
                    "insertion_auc": i.value, "random_insertion_auc": ir.value,
                    "samples_beating_random": beating})


def _robust(model: Any, exp: Explanation, opts: Mapping[str, Any]) -> Verdict:
    x = np.asarray(exp.inputs, dtype=np.float64)
    radius = opts.get("radius") or 0.05 * float(x.max() - x.min() or 1.0)
    thr = float(opts.get("robust_threshold", 0.5))
    r = max_sensitivity(model, exp, n_samples=opts.get("n_draws", 16), radius=radius,
                        seed=opts.get("seed", 0), explain_options=opts.get("explain_options"))
    return Verdict(_QUESTIONS["robust"], bool(r.value < thr),
                   f"max-sensitivity (relative change of the map under noise of radius "
                   f"{radius:.3g}) below {thr}",
                   {"max_sensitivity": r.value, "radius": radius, "threshold": thr})


def _sanity(model: Any, exp: Explanation, opts: Mapping[str, Any]) -> Verdict:
    thr = float(opts.get("sanity_threshold", 0.5))
    r = sanity_metric(model, exp, max_samples=opts.get("sanity_samples", 8), threshold=thr,
                      seed=opts.get("seed", 0), explain_options=opts.get("explain_options"))
    d = r.details
    figs: dict[str, Any] = {f"{d['measure']}_after_randomisation": r.value,
                            f"{d['measure']}_upper_half_randomised": d.get("upper"), "threshold": thr}
    figs["per_layer"] = {k: v[d["measure"]] for k, v in d["similarity"].items()}
    if d.get("random_logit"):
        figs["random_logit"] = d["random_logit"].get(d["measure"])
    if r.params.get("reason"):
        figs["reason"] = r.params["reason"]
    answer = None if r.params.get("verdict") == "undefined" else bool(r.params["passed"])
    return Verdict(_QUESTIONS["sanity"], answer,
                   f"{d['measure']} between the maps of the model and of a copy with its upper "
                   f"half of layers randomised, and with every layer randomised (cascading, top "
                   f"down), both below {thr}", figs)


def _agree(model: Any, exp: Explanation, opts: Mapping[str, Any]) -> Verdict:
    thr = float(opts.get("agree_threshold", 0.5))
    r = agreement(model, exp, methods=opts.get("methods"), seed=opts.get("seed", 0))
    figs: dict[str, Any] = {"mean_rank_correlation": r.value, "threshold": thr}
    figs.update({f"rank_correlation_{k}": v["rank_correlation"] for k, v in r.details.items()})
    return Verdict(_QUESTIONS["agree"], bool(r.value >= thr),
                   f"mean Spearman rank correlation of |values| with {', '.join(r.params['methods'])} "
                   f"at least {thr}", figs)


_OPTIONS = {"n_steps", "seed", "radius", "n_draws", "robust_threshold", "sanity_threshold",
            "sanity_samples", "methods", "agree_threshold", "explain_options"}

_RUN: dict[str, Callable[[Any, Explanation, Mapping[str, Any]], Verdict]] = {
    "faithful": _faithful, "robust": _robust, "sanity": _sanity, "agree": _agree}


def trust_card(
    model: Any,
    exp: Explanation,
    *,
    checks: Sequence[str] = CHECKS,
    max_samples: int = 16,
    **options: Any,
) -> TrustCard:
    """Answer "faithful? robust? passes sanity checks? do methods agree?" for ``exp``.

    Runs on the first ``max_samples`` samples. Options: ``n_steps`` (deletion/insertion points,
    20), ``seed`` (0), ``radius`` (noise radius, default 5 % of the inputs' range), ``n_draws``
    (16), ``robust_threshold`` (0.5), ``sanity_threshold`` (0.5), ``sanity_samples`` (8),
    ``methods`` (other methods to compare with), ``agree_threshold`` (0.5), ``explain_options``
    (options to re-explain with, e.g. a baseline tensor). A check that cannot run on this
    explanation (no gradients, no other method...) is answered ``None`` with the reason.
    The card's dict is also stored in ``exp.quality["trust"]``.
    """
    unknown = [c for c in checks if c not in _RUN]
    if unknown:
        raise OptionError(f"unknown checks {unknown}; choose from {list(CHECKS)}")
    bad = sorted(set(options) - _OPTIONS)
    if bad:
        raise OptionError(f"trust_card() takes no option(s) {bad}; it takes {sorted(_OPTIONS)}")
    sub = exp if len(exp) <= max_samples else exp[:max_samples]
    verdicts: dict[str, Verdict] = {}
    for c in checks:
        try:
            verdicts[c] = _RUN[c](model, sub, options)
        except UnveilError as err:
            verdicts[c] = Verdict(_QUESTIONS[c], None, "could not be run", {"reason": str(err)})
    card = TrustCard(exp.method, len(sub), verdicts)
    exp.quality["trust"] = card.to_dict()
    return card
