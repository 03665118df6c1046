"""Reduce a section's numbers for one input to the facts the narrative states."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.explanation import Explanation
from ..core.registry import get_method
from ..errors import UnknownMethodError
from ._stats import concentration, region
from .narrative import MethodFacts, Narrative, Prediction, narrate, trust_summary
from .render import _heat2d, display_kind, element_values, feature_table, token_values

if TYPE_CHECKING:
    from ._builder import MethodRun, Section

__all__ = ["class_name", "method_facts", "prediction", "probabilities", "sample_narrative",
           "section_trust_summary"]


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
    return f


def sample_narrative(section: Section, i: int, runs: list[MethodRun]) -> Narrative:
    """The narrative of input ``i`` from the section's runs and their agreement on it."""
    facts = [method_facts(r.explanation, i, r.method) for r in runs if r.explanation is not None]
    samples = section.trust.samples
    agree = samples[i] if i < len(samples) else None
    ok = [r.explanation for r in runs if r.explanation is not None]
    kind = display_kind(ok[0]) if ok else {"tabular": "table"}.get(section.modality, section.modality)
    return narrate(prediction(section, i), facts, agree, kind=kind)


def section_trust_summary(section: Section) -> Narrative:
    """Plain words for the trust card: verdicts over the batch and the mean agreement."""
    facts = [_verdict_facts(section, r.method, MethodFacts(r.method))
             for r in section.runs if r.explanation is not None]
    return trust_summary(facts, section.trust.agreement)
