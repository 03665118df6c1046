"""The narrative states the numbers it is given, and warns when they call for caution."""

from __future__ import annotations

import numpy as np

from unveil.report._stats import agreement
from unveil.report.narrative import MethodFacts, Prediction, display_name, narrate, trust_summary


def test_display_names() -> None:
    assert display_name("integrated_gradients") == "Integrated Gradients"
    assert display_name("grad_cam") == "Grad-CAM"
    assert display_name("kernel_shap") == "Kernel SHAP"


def test_confident_table_prediction() -> None:
    p = Prediction(label="malignant", prob=0.97, target="malignant", runner_up="benign",
                   runner_prob=0.03, true_label="malignant")
    f = [MethodFacts("integrated_gradients", top_for=["worst radius", "mean area"],
                     top_against=["texture"], top_abs=["worst radius", "texture", "mean area"]),
         MethodFacts("saliency", signed=False, top_for=["worst radius"], top_abs=["worst radius"])]
    x = np.arange(10.0)
    n = narrate(p, f, agreement({"integrated_gradients": x, "saliency": x + 0.1}), kind="table")
    text = n.text()
    assert "predicts malignant with 97% confidence (next: benign, 3%)" in text
    assert "worst radius and mean area" in text and "texture pushed against it" in text
    assert "in 2" in text and "agree well" in text
    assert n.cautions == []


def test_cautions() -> None:
    p = Prediction(label="benign", prob=0.52, target="benign", true_label="malignant")
    f = [MethodFacts("integrated_gradients", delta_rel=0.4, sanity_passed=False, top_for=["a"])]
    x = np.arange(50.0)
    ag = agreement({"integrated_gradients": x, "lime": -x})
    c = " ".join(narrate(p, f, ag, kind="table").cautions)
    assert "unsure (52%)" in c
    assert "the true label is malignant" in c
    assert "disagree" in c and "Integrated Gradients and LIME differ most (-1.00)" in c
    assert "attributions of Integrated Gradients miss the change in score by 40%" in c
    assert "sanity" not in c  # a batch verdict: stated once in the trust card, not per input


def test_trust_summary() -> None:
    f = [MethodFacts("integrated_gradients", faithful=True, deletion=(0.1, 0.4), sanity_passed=True),
         MethodFacts("guided_backprop", faithful=False, deletion=(0.5, 0.4), sanity_passed=False),
         MethodFacts("lime")]
    n = trust_summary(f, None)
    s, c = " ".join(n.sentences), " ".join(n.cautions)
    assert "ranking of Integrated Gradients beats a random order" in s
    assert ("(deletion AUC 0.1 against 0.4 at random); 1 of the 2 methods judged pass this test "
            "(3 ran; 1 could not be judged)") in s
    assert "Integrated Gradients passed the sanity check" in s
    assert "ranking of Guided Backprop did not beat a random order" in c
    assert "Guided Backprop failed the sanity check" in c


def test_image_sentences_and_other_target() -> None:
    p = Prediction(label="7", prob=0.9, target="1")
    f = [MethodFacts("grad_cam", region="the upper left", concentration=0.42),
         MethodFacts("saliency", region="the upper left"), MethodFacts("lime", region="the centre")]
    s = " ".join(narrate(p, f, None, kind="image").sentences)
    assert "Grad-CAM places the evidence for 1 mainly in the upper left" in s
    assert "42% of it" in s and "2 of 3 methods point to the upper left" in s
    assert "explain the score of 1, not the predicted class" in s


def test_text_words_are_quoted() -> None:
    p = Prediction(label="positive", prob=0.8, target="positive")
    s = narrate(p, [MethodFacts("saliency", top_for=["great"], top_against=["not"])], None,
                kind="text").sentences
    assert "\u201cgreat\u201d" in " ".join(s)
