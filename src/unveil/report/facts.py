"""Reduce a section's numbers for one input to the facts the narrative states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.explanation import Explanation
from ..core.registry import get_method
from ..errors import UnknownMethodError
from ._stats import Agreement, concentration, region
from .narrative import (
    AGREE_PARTLY,
    AGREE_WELL,
    MIN_FEATURES_TO_COMPARE,
    MethodFacts,
    Narrative,
    Prediction,
    display_name,
    narrate,
    trust_summary,
)
from .render import _heat2d, display_kind, element_values, feature_table, token_values

if TYPE_CHECKING:
    from ._builder import MethodRun, Section

__all__ = ["HOW_MEASURED", "Lead", "Reason", "class_name", "degenerate_reason", "input_agreement",
           "is_signed",
           "lead_margin", "lead_method", "method_facts", "outside_warning", "prediction", "probabilities",
           "reasons", "sample_narrative", "section_trust_summary", "trust_line", "usable_runs"]

#: How the lead method is chosen, in words (the trust card's faithfulness check).
HOW_MEASURED = "ranked by deletion/insertion against a random order"


def probabilities(scores: np.ndarray) -> np.ndarray | None:
    """Class probabilities from scores (N, K): kept if rows already are probabilities, a
    softmax otherwise; ``None`` for one score per row."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        return None
    if (s >= 0).all() and np.allclose(s.sum(1), 1.0, atol=1e-3):
        return s
    e = np.exp(s - s.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def class_name(k: int, names: list[str] | None) -> str:
    """The name of class ``k`` (``class k`` without names)."""
    return names[k] if names is not None and 0 <= k < len(names) else f"class {k}"


def prediction(section: Section, i: int) -> Prediction:
    """What the model said about input ``i`` of the section."""
    s = section.scores
    names = section.class_names
    true = None
    if section.labels is not None and i < section.labels.size:
        true = class_name(int(section.labels[i]), names)
    p = probabilities(s)
    if p is None:
        score = float(np.ravel(s[i])[0])
        return Prediction(label=f"score {score:.3g}", prob=None, target="the score",
                          true_label=None, score=score)
    order = np.argsort(-p[i], kind="stable")
    k = int(order[0])
    t = int(section.targets[i]) if section.targets is not None else k
    return Prediction(label=class_name(k, names), prob=float(p[i, k]), target=class_name(t, names),
                      runner_up=class_name(int(order[1]), names), runner_prob=float(p[i, order[1]]),
                      true_label=true)


def is_signed(exp: Explanation) -> bool:
    """Whether the map's sign means "for" / "against" (rather than a magnitude): a map with
    negative values is signed; one made with ``abs=True`` is not; otherwise the method's
    declaration says (``signed=`` at registration; an unregistered method counts as unsigned)."""
    if bool((np.asarray(exp.values) < 0).any()):
        return True
    if exp.params.get("abs") is True:
        return False
    try:
        return get_method(exp.method).signed
    except UnknownMethodError:
        return False


def _delta_rel(exp: Explanation, i: int) -> float | None:
    if exp.delta is None or exp.outputs is None or exp.baseline_outputs is None:
        return None
    change = abs(float(exp.outputs[i]) - float(exp.baseline_outputs[i]))
    return abs(float(exp.delta[i])) / max(change, 1e-6) if change > 1e-6 else None


def method_facts(exp: Explanation, i: int, method: str, *, top: int = 3) -> MethodFacts:
    """Top features (or region) and completeness of one method's map of input ``i``."""
    kind = display_kind(exp)
    signed = is_signed(exp)
    f = MethodFacts(method=method, signed=signed, delta_rel=_delta_rel(exp, i))
    if kind == "image":
        x = np.asarray(exp.inputs[i])
        heat = _heat2d(element_values(exp)[i], (x.shape[-2], x.shape[-1]))
        f.region, f.concentration = region(heat), concentration(heat)
        return f
    if kind == "text":
        toks, v = token_values(exp, i)
        names, vals = toks, v
    elif kind == "table":
        rows = feature_table(exp, i, top_k=None)
        names, vals = [r.name for r in rows], np.array([r.attribution for r in rows])
    else:
        return f
    vals = np.asarray(vals, dtype=np.float64)
    key = vals if signed else np.abs(vals)
    pos = [j for j in np.argsort(-key, kind="stable") if key[j] > 0][:top]
    f.top_for = [names[j] for j in pos]
    f.top_abs = [names[j] for j in np.argsort(-np.abs(vals), kind="stable")[:top] if vals[j] != 0]
    if signed:
        f.top_against = [names[j] for j in np.argsort(vals, kind="stable")[:2] if vals[j] < 0]
    return f


def _verdict_facts(section: Section, method: str, f: MethodFacts) -> MethodFacts:
    t = section.trust
    f.sanity_passed = t.answer(method, "sanity")
    f.faithful = t.answer(method, "faithful")
    figs = t.verdicts.get(method, {}).get("faithful", {}).get("figures", {})
    if "deletion_auc" in figs and "random_deletion_auc" in figs:
        f.deletion = (float(figs["deletion_auc"]), float(figs["random_deletion_auc"]))
    f.margin = lead_margin(section, method)
    return f


def sample_narrative(section: Section, i: int, runs: list[MethodRun]) -> Narrative:
    """The narrative of input ``i`` from the section's runs and their agreement on it.

    It leads with :func:`lead_method`'s choice, says how that was chosen, and leaves out the
    maps that are degenerate on this input; with no method fit to lead it names no reasons.
    """
    lead = lead_method(section, i, runs)
    ok = [r for r in usable_runs(runs, i) if r.explanation is not None]
    order = sorted(ok, key=lambda r: r.method != lead.method)
    facts = [method_facts(r.explanation, i, r.method) for r in order if r.explanation is not None]
    if lead.method is None:
        facts = []
    elif facts:
        facts[0].how = (f" (measured most faithful on these inputs: {HOW_MEASURED})" if lead.measured
                        else " (its faithfulness was not measured)")
    agree = input_agreement(section, i, runs)
    exps = [r.explanation for r in runs if r.explanation is not None]
    kind = display_kind(exps[0]) if exps else {"tabular": "table"}.get(section.modality, section.modality)
    nar = narrate(prediction(section, i), facts, agree, kind=kind)
    if lead.method is None and exps:
        nar.cautions.append(lead.why)
    return nar


def section_trust_summary(section: Section) -> Narrative:
    """Plain words for the trust card: verdicts over the batch and the mean agreement."""
    facts = [_verdict_facts(section, r.method, MethodFacts(r.method))
             for r in section.runs if r.explanation is not None]
    return trust_summary(facts, section.trust.agreement)


# -- what each input's summary states --------------------------------------------------------
def degenerate_reason(exp: Explanation, i: int) -> str | None:
    """Why ``exp``'s map of input ``i`` is degenerate (``quality["degenerate"]``), else None."""
    d: Any = exp.quality.get("degenerate") if isinstance(exp.quality, dict) else None
    if not isinstance(d, dict) or i not in [int(r) for r in d.get("rows", [])]:
        return None
    return f"{d.get('kind', 'constant')}: {d.get('reason', 'the map is constant, so it ranks nothing')}"


def usable_runs(runs: list[MethodRun], i: int) -> list[MethodRun]:
    """The runs with a map of input ``i`` that is not degenerate."""
    return [r for r in runs if r.explanation is not None and degenerate_reason(r.explanation, i) is None]


@dataclass
class Lead:
    """The method an input's reasons are taken from, and how it was chosen."""

    method: str | None  # None: no method is fit to lead
    measured: bool  # chosen by a measured faithfulness margin
    margin: float | None
    why: str  # how it was chosen, in words
    n_judged: int = 0
    n_faithful: int = 0


def input_agreement(section: Section, i: int, runs: list[MethodRun]) -> Agreement | None:
    """The methods' agreement on input ``i``, leaving out the maps that are degenerate on it."""
    from .trust import sample_agreement

    ok = [r for r in runs if r.explanation is not None]
    use = usable_runs(ok, i)
    if len(use) == len(ok):
        samples = section.trust.samples
        return samples[i] if i < len(samples) else None
    return sample_agreement(use, i)


def lead_margin(section: Section, method: str) -> float | None:
    """The faithfulness margin the trust card measured for ``method`` (None if not measured)."""
    figs = section.trust.verdicts.get(method, {}).get("faithful", {}).get("figures", {})
    m = figs.get("faithfulness_margin")
    return float(m) if isinstance(m, (int, float)) and np.isfinite(m) else None


def lead_method(section: Section, i: int, runs: list[MethodRun] | None = None) -> Lead:
    """The method to take input ``i``'s reasons from: among the methods judged faithful (and
    not failing a sanity check), the one with the highest faithfulness margin; if none was
    judged, the first in the preferred order, marked as not measured. A method judged
    unfaithful or failing its sanity check, or whose map of ``i`` is degenerate, never leads."""
    from ._builder import preferred_order

    t = section.trust
    cands = [r.method for r in usable_runs(list(runs if runs is not None else section.runs), i)]
    judged = [m for m in cands if t.answer(m, "faithful") is not None]
    bad = {m for m in cands if t.answer(m, "faithful") is False or t.answer(m, "sanity") is False}
    good = [(mg, m) for m in judged if m not in bad and (mg := lead_margin(section, m)) is not None
            and t.answer(m, "faithful") is True]
    n_j, n_g = len(judged), len(good)
    if good:
        mg, m = max(good, key=lambda p: p[0])
        return Lead(m, True, mg, f"the highest faithfulness margin ({mg:+.3g}) of the {n_g} "
                    f"method{'s' if n_g != 1 else ''} judged faithful ({HOW_MEASURED})", n_j, n_g)
    rest = [m for m in preferred_order(section.modality, cands) if m not in bad and m not in judged]
    if rest:
        why = ("faithfulness was not measured, so it leads by the default order only" if not judged
               else f"none of the {n_j} methods judged beat a random order; it was not measured")
        return Lead(rest[0], False, None, why, n_j, n_g)
    return Lead(None, False, None, "no method's map is fit to give reasons for this input: each "
                "one is blank, or did not beat a random order, or failed its sanity check", n_j, n_g)


@dataclass
class Reason:
    """One of an input's strongest features, in the data's own units."""

    name: str
    value: float | None
    level: str | None  # "high", "low" or "typical" against the section's data
    direction: int  # +1 towards the explained class, -1 against, 0 a magnitude

    def text(self, target: str) -> str:
        """``worst perimeter = 117.4 (high) pushed towards malignant``."""
        v = "" if self.value is None else f" = {self.value:.4g}"
        lv = f" ({self.level})" if self.level else ""
        verb = {1: f"pushed towards {target}", -1: f"pushed against {target}",
                0: "mattered most (this method does not say in which direction)"}[self.direction]
        return f"{self.name}{v}{lv} {verb}"


def _level(section: Section, j: int, value: float) -> str | None:
    ref = section.reference
    if ref is None or ref.ndim != 2 or j >= ref.shape[1] or not np.isfinite(value):
        return None
    lo, hi = np.percentile(ref[:, j], [25, 75])
    return "high" if value > hi else "low" if value < lo else "typical"


def reasons(section: Section, exp: Explanation, i: int, *, top: int = 3) -> list[Reason]:
    """Input ``i``'s reasons by ``exp``'s map: for a signed map the ``top`` features (or words)
    that pushed most towards the explained class, then the one that pushed most against it;
    for a magnitude map the ``top`` largest."""
    signed = is_signed(exp)
    kind = display_kind(exp)
    if kind == "text":
        toks, v = token_values(exp, i)
        key = v if signed else np.abs(v)
        order = [j for j in np.argsort(-key, kind="stable") if key[j] > 0][:top]
        if signed:
            order += [j for j in np.argsort(v, kind="stable") if v[j] < 0][:1]
        return [Reason(f"\u201c{toks[j]}\u201d", None, None, int(np.sign(v[j])) if signed else 0)
                for j in order]
    if kind != "table":
        return []
    names = _feature_index(exp)
    rows = [r for r in feature_table(exp, i, top_k=None) if r.attribution != 0]
    if signed:  # the reasons for the decision first, then the strongest against it
        rows = [r for r in rows if r.attribution > 0][:top] + [r for r in rows if r.attribution < 0][:1]
    out = []
    for r in rows[: top + 1 if signed else top]:
        j = names.get(r.name)
        val = r.value if np.isfinite(r.value) else None
        lvl = _level(section, j, r.value) if j is not None and val is not None else None
        out.append(Reason(r.name, val, lvl, int(np.sign(r.attribution)) if signed else 0))
    return out


def _feature_index(exp: Explanation) -> dict[str, int]:
    n = int(np.asarray(exp.inputs[0]).size)
    names = exp.feature_names if exp.feature_names and len(exp.feature_names) == n else [
        f"feature {j}" for j in range(n)]
    return {str(nm): j for j, nm in enumerate(names)}


def outside_warning(runs: list[MethodRun], i: int) -> str | None:
    """The sentence saying input ``i`` lies outside the model's data, when a run checked it."""
    from ..core.reference import describe_outside

    for r in runs:
        v = r.explanation.quality.get("in_distribution") if r.explanation is not None else None
        if isinstance(v, dict):
            return describe_outside(v, i)
    return None


def trust_line(section: Section, i: int, lead: Lead) -> str:
    """One line: may the reasons above be trusted, and on what evidence."""
    if lead.method is None:
        return "Do not read the maps below as the model's reasons (see why above)."
    name = display_name(lead.method)
    if lead.measured:
        line = (f"Trustworthy as far as measured: the ranking of {name} beat a random order "
                f"(faithfulness margin {lead.margin:+.3g}; {lead.n_faithful} of {lead.n_judged} "
                "methods judged passed)")
    else:
        line = f"Not verified: {name} was chosen without measuring it ({lead.why})"
    ag = input_agreement(section, i, list(section.runs))
    r = ag.mean_rank() if ag is not None and len(ag.methods) >= 2 else float("nan")
    if np.isfinite(r) and ag is not None and ag.size >= MIN_FEATURES_TO_COMPARE:
        word = ("agree well" if r >= AGREE_WELL else "agree only partly" if r >= AGREE_PARTLY
                else "disagree")
        line += f"; the {len(ag.methods)} methods {word} on this input (rank correlation {r:.2f})"
    return line + "."
