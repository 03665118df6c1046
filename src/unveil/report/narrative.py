"""Plain-language sentences written from the numbers of a report.

Nothing here computes an explanation: the facts (prediction, top features, where the evidence
lies, agreement between methods, quality figures) are measured elsewhere and only put into words,
with a caution whenever a figure says the explanation should not be trusted on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.registry import get_method
from ..errors import UnknownMethodError
from ._stats import Agreement

__all__ = ["MethodFacts", "Narrative", "Prediction", "display_name", "narrate", "pct",
           "trust_summary"]

_ACRONYMS = {"cam": "CAM", "lrp": "LRP", "lime": "LIME", "rise": "RISE", "shap": "SHAP",
             "deeplift": "DeepLIFT", "x": "×"}

AGREE_WELL = 0.6
AGREE_PARTLY = 0.3
LOW_CONFIDENCE = 0.6
DELTA_TOLERANCE = 0.1
MIN_FEATURES_TO_COMPARE = 5  # a rank correlation over fewer features says little


def display_name(method: str) -> str:
    """The readable name a method declares (``grad_cam`` -> ``Grad-CAM``); for a name that is
    not registered, its words capitalised (``my_method`` -> ``My Method``)."""
    try:
        return get_method(method).display_name
    except UnknownMethodError:
        return " ".join(_ACRONYMS.get(w, w.capitalize()) for w in method.split("_"))


@dataclass
class Prediction:
    """What the model said about one input."""

    label: str  # predicted class
    prob: float | None  # its probability, when the scores can be read as probabilities
    target: str  # the class the maps explain
    runner_up: str | None = None
    runner_prob: float | None = None
    true_label: str | None = None
    score: float | None = None  # raw score (models with one output)


@dataclass
class MethodFacts:
    """What one method's map of one input says, reduced to a few facts."""

    method: str
    signed: bool = True  # whether the map has negative values (direction is meaningful)
    top_for: list[str] = field(default_factory=list)
    top_against: list[str] = field(default_factory=list)
    top_abs: list[str] = field(default_factory=list)  # strongest by magnitude, any sign
    region: str | None = None
    concentration: float | None = None
    delta_rel: float | None = None
    sanity_passed: bool | None = None
    faithful: bool | None = None  # beat a random order on deletion and insertion (batch verdict)
    deletion: tuple[float, float] | None = None  # (deletion AUC, the same in random order)
    margin: float | None = None  # faithfulness margin (batch figure)
    how: str = ""  # how this method came to lead the description, e.g. " (measured most faithful)"


@dataclass
class Narrative:
    """Sentences for one input, and the cautions to print beside them."""

    sentences: list[str]
    cautions: list[str]

    def text(self) -> str:
        """Everything as one paragraph of plain text."""
        return " ".join(self.sentences + [f"Caution: {c}" for c in self.cautions])


def pct(p: float) -> str:
    """A probability as a percentage for a reader (``over 99.9%``, ``under 1%``, ``97%``)."""
    if p >= 0.999:
        return "over 99.9%"
    if p < 0.005:
        return "under 1%"
    return f"{100 * p:.0f}%" if p < 0.995 else f"{100 * p:.1f}%"


def _list(words: list[str], *, quote: bool = False) -> str:
    if quote:
        words = [f"\u201c{w}\u201d" for w in words]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _prediction_sentences(p: Prediction) -> tuple[list[str], list[str]]:
    s: list[str] = []
    c: list[str] = []
    if p.prob is not None:
        line = f"The model predicts {p.label} with {pct(p.prob)} confidence"
        if p.runner_up is not None and p.runner_prob is not None:
            line += f" (next: {p.runner_up}, {pct(p.runner_prob)})"
        s.append(line + ".")
        if p.prob < LOW_CONFIDENCE:
            c.append(f"the model is unsure ({pct(p.prob)}); the maps explain a weak decision.")
    elif p.score is not None:
        s.append(f"The model's score for this input is {p.score:.3g}.")
    else:
        s.append(f"The model predicts {p.label}.")
    if p.true_label is not None and p.true_label != p.label:
        c.append(f"the prediction is wrong: the true label is {p.true_label}.")
    if p.target != p.label:
        s.append(f"The maps explain the score of {p.target}, not the predicted class.")
    return s, c


def _feature_sentences(facts: list[MethodFacts], target: str, kind: str) -> list[str]:
    s: list[str] = []
    lead = facts[0]
    q = kind == "text"
    noun = "words" if q else "features"
    by = f"According to {display_name(lead.method)}{lead.how}"
    if lead.top_for:
        verb = f"pushed the prediction towards {target} most" if lead.signed else "mattered most"
        line = f"{by}, the {noun} that {verb} were {_list(lead.top_for, quote=q)}"
        if lead.signed and lead.top_against:
            line += f"; {_list(lead.top_against, quote=q)} pushed against it"
        s.append(line + ".")
    elif lead.top_against:
        s.append(f"{by}, no {noun[:-1]} pushed towards {target}; "
                 f"{_list(lead.top_against, quote=q)} pushed against it most.")
    if len(facts) > 1 and lead.top_abs:
        first = lead.top_abs[0]
        n = sum(first in f.top_abs for f in facts)
        s.append(f"Across the {len(facts)} methods, {_list([first], quote=q)} is among the "
                 f"{len(lead.top_abs)} strongest {noun} in {n}.")
    return s


def _image_sentences(facts: list[MethodFacts], target: str) -> list[str]:
    s: list[str] = []
    lead = next((f for f in facts if f.region), None)
    if lead is None:
        return s
    line = f"{display_name(lead.method)}{lead.how} places the evidence for {target} mainly in {lead.region}"
    if lead.concentration is not None:
        line += f"; the top 10% of pixels hold {pct(lead.concentration)} of it"
    s.append(line + ".")
    regions = [f.region for f in facts if f.region]
    if len(regions) > 1:
        common = max(set(regions), key=regions.count)
        s.append(f"{regions.count(common)} of {len(regions)} methods point to {common}.")
    return s


def _faithful_sentences(facts: list[MethodFacts]) -> list[str]:
    """One sentence on the deletion/insertion verdicts of the methods that were judged."""
    judged = [f for f in facts if f.faithful is not None]
    good = [f for f in judged if f.faithful]
    if not good:
        return []
    lead = max(good, key=lambda f: f.margin if f.margin is not None else -np.inf)
    line = (f"The ranking of {display_name(lead.method)} beats a random order when the top "
            "features are deleted or inserted")
    if lead.deletion is not None:
        line += f" (deletion AUC {lead.deletion[0]:.3g} against {lead.deletion[1]:.3g} at random)"
    if len(judged) > 1:
        line += f"; {len(good)} of the {len(judged)} methods judged pass this test"
        if len(facts) > len(judged):
            line += f" ({len(facts)} ran; {len(facts) - len(judged)} could not be judged)"
    return [line + "."]


def _agreement_sentences(agree: Agreement | None) -> tuple[list[str], list[str]]:
    if agree is None or len(agree.methods) < 2 or agree.size < MIN_FEATURES_TO_COMPARE:
        return [], []
    r = agree.mean_rank()
    if not np.isfinite(r):
        return [], []
    pairs = agree.extreme_pairs()
    if r >= AGREE_WELL:
        return [f"The methods agree well (mean rank correlation {r:.2f})."], []
    if r >= AGREE_PARTLY:
        return [f"The methods agree only partly (mean rank correlation {r:.2f})."], []
    worst = ""
    if pairs is not None:
        a, b, v = pairs[0]
        worst = f" {display_name(a)} and {display_name(b)} differ most ({v:.2f})."
    return [], [f"the methods disagree (mean rank correlation {r:.2f}); do not rely on any "
                f"single map.{worst}"]


def narrate(
    prediction: Prediction, facts: list[MethodFacts], agree: Agreement | None, *, kind: str
) -> Narrative:
    """Sentences about one input: the prediction, the evidence, agreement, and cautions.

    ``kind`` is ``"image"``, ``"table"``, ``"text"`` or ``"sequence"``; ``facts`` are in the
    order the methods were asked for (the first one leads the description).
    """
    sentences, cautions = _prediction_sentences(prediction)
    if facts:
        if kind == "image":
            sentences += _image_sentences(facts, prediction.target)
        else:
            sentences += _feature_sentences(facts, prediction.target, kind)
    s2, c2 = _agreement_sentences(agree)
    sentences += s2
    cautions += c2
    for f in facts:
        if f.delta_rel is not None and f.delta_rel > DELTA_TOLERANCE:
            cautions.append(
                f"the attributions of {display_name(f.method)} miss the change in score by "
                f"{pct(f.delta_rel)}; raise its n_steps."
            )
    return Narrative(sentences, cautions)


def trust_summary(facts: list[MethodFacts], agree: Agreement | None) -> Narrative:
    """Sentences about a whole batch: faithfulness and sanity verdicts, mean agreement.

    ``facts`` carry the batch verdicts (``faithful``, ``deletion``, ``sanity_passed``).
    """
    sentences = _faithful_sentences(facts)
    cautions: list[str] = []
    for f in facts:
        if f.faithful is False:
            extra = ""
            if f.deletion is not None:
                extra = f" (deletion AUC {f.deletion[0]:.3g} against {f.deletion[1]:.3g} at random)"
            cautions.append(
                f"the ranking of {display_name(f.method)} did not beat a random order when features "
                f"were removed or inserted{extra}, so it may not show what the model uses."
            )
        if f.sanity_passed is True:
            sentences.append(f"{display_name(f.method)} passed the sanity check: its map changes "
                             "when the model's weights are randomised.")
        if f.sanity_passed is False:
            cautions.append(
                f"{display_name(f.method)} failed the sanity check: its map hardly changes when "
                "the weights of the layers that make the decision are randomised, so it may show "
                "the input (or what the first layers detect) more than the model's reasoning."
            )
    s2, c2 = _agreement_sentences(agree)
    return Narrative(sentences + s2, cautions + c2)
