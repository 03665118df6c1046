"""What a person sees is true: each input opens with the decision, its reasons and a verdict;
the reasons come from the method measured most faithful; blank maps are called blank; legends
follow each map's sign convention; counts are exact; names, not indices."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
import torch
from _check import check_self_contained
from torch import nn

import unveil as uv
from _util import TinyCNN
from unveil.core.model import as_model
from unveil.core.quality import mark_degenerate
from unveil.report import Report, build_section, display_name, explanation_html
from unveil.report.facts import lead_margin, lead_method, reasons, sample_narrative
from unveil.report.trust import trust_card

NAMES = ["income", "debt", "years_employed", "age", "savings", "late_payments"]
CLASSES = ["rejected", "approved"]


class Scaled(nn.Module):
    """Standardise inside (rows stay in their own units), then a small MLP."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _table() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 400
    income = 50 + 15 * torch.randn(n, generator=g)
    debt = 20 + 8 * torch.randn(n, generator=g)
    years = 10 + 5 * torch.randn(n, generator=g)
    age = 40 + 10 * torch.randn(n, generator=g)
    savings = 5 + 2 * torch.randn(n, generator=g)
    late = torch.randint(0, 6, (n,), generator=g).float()
    X = torch.stack([income, debt, years, age, savings, late], 1)
    y = ((income - 50) / 15 - (debt - 20) / 8 - 0.8 * (late - 2.5) / 1.7 > 0).long()
    return X, y


@pytest.fixture(scope="module")
def credit() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    X, y = _table()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Scaled(X.mean(0), X.std(0))
        opt = torch.optim.Adam(net.parameters(), lr=2e-2)
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(net(X), y).backward()
            opt.step()
    net.eval()
    acc = float((net(X).argmax(1) == y).float().mean())
    assert acc > 0.9  # the model really learned the rule the tests read
    return net, X, y


def _retrust(section, net) -> None:
    """Recompute the trust card after an explanation was edited in place."""
    section.trust = trust_card(as_model(net), torch.as_tensor(section.inputs), section.runs,
                               evaluate=True)


@pytest.fixture(scope="module")
def planted(credit):
    """A section whose first method's map is sign-flipped (it ranks the features backwards)
    and whose saliency map of input 0 is blanked."""
    pytest.importorskip("unveil.metrics")
    net, X, _ = credit
    sec = build_section(net, X[:4], ["input_x_gradient", "integrated_gradients", "saliency",
                                     "grad_cam"], class_names=CLASSES, feature_names=NAMES,
                        data=X, on_error="record", evaluate=False)
    runs = {r.method: r for r in sec.runs}
    bad = runs["input_x_gradient"].explanation
    bad.values = -np.asarray(bad.values)
    blank = runs["saliency"].explanation
    v = np.array(blank.values)
    v[0] = 0.0
    blank.values = v
    mark_degenerate(blank, "gradient")
    _retrust(sec, net)
    return sec


def test_lead_is_the_most_faithful_never_a_failing_or_blank_map(planted) -> None:
    t = planted.trust
    assert t.answer("input_x_gradient", "faithful") is False  # the planted backwards ranking
    faithful = [m for m in ("integrated_gradients", "saliency") if t.answer(m, "faithful")]
    assert faithful, "no method was judged faithful: the case is trivial"
    for i in range(4):
        lead = lead_method(planted, i)
        usable = [m for m in faithful if not (i == 0 and m == "saliency")]
        best = max(usable, key=lambda m: lead_margin(planted, m) or -np.inf)
        assert lead.method == best and lead.measured
        assert lead.margin == pytest.approx(lead_margin(planted, best)) and lead.margin > 0
    ok = [r for r in planted.runs if r.explanation is not None]
    text = sample_narrative(planted, 0, ok).text()
    assert "According to Input × Gradient" not in text
    assert f"According to {display_name(str(lead_method(planted, 0).method))} (measured most " \
           "faithful on these inputs: ranked by deletion/insertion against a random order)" in text
    # the blank map is left out of input 0's narrative, not of input 1's
    assert "Saliency" not in text
    assert "Across the 2 methods" in text and "Across the 3 methods" in sample_narrative(
        planted, 1, ok).text()


def test_page_opens_with_decision_reasons_and_verdict(planted, credit) -> None:
    _, X, _ = credit
    page = Report([planted]).html
    check_self_contained(page)
    first = page.split('data-testid="input"', 2)[1]
    lead = lead_method(planted, 0)
    name = display_name(str(lead.method))
    decision = re.search(r'data-testid="decision">(.*?)</p>', first).group(1)
    probs = torch.softmax(torch.as_tensor(planted.scores[0]), 0)
    k = int(probs.argmax())
    assert f"Decision: <b>{CLASSES[k]}</b>" in decision and "confidence" in decision
    # the reasons: the lead's strongest features, in the row's own units, with their level
    exp = planted.explanations[lead.method]
    rs = reasons(planted, exp, 0)
    assert rs and all(r.direction != 0 for r in rs)  # a signed method: directions are stated
    top = max(range(6), key=lambda j: float(exp.values[0, j]))
    assert rs[0].name == NAMES[top] and rs[0].value == pytest.approx(float(X[0, top]))
    q25, q75 = np.percentile(X[:, top].numpy(), [25, 75])
    level = "high" if rs[0].value > q75 else "low" if rs[0].value < q25 else "typical"
    assert html.escape(f"{NAMES[top]} = {float(X[0, top]):.4g} ({level}) pushed towards "
                       f"{CLASSES[k]}") in first
    verdict = re.search(r'data-testid="verdict">(.*?)</p>', first).group(1)
    assert f"the ranking of {html.escape(name)} beat a random order" in verdict
    assert f"faithfulness margin {lead.margin:+.3g}" in verdict
    # order on the page: decision, reasons, verdict, then the per-method detail
    pos = [first.index(f'data-testid="{k}"') for k in ("decision", "reasons", "verdict", "legend")]
    assert pos == sorted(pos)


def test_degenerate_map_is_called_so_with_its_reason(planted) -> None:
    page = Report([planted]).html
    blocks = page.split('data-testid="input"')[1:]
    assert 'data-testid="degenerate"' in blocks[0] and 'data-testid="degenerate"' not in blocks[1]
    reason = planted.explanations["saliency"].quality["degenerate"]["reason"]
    assert html.escape(reason) in blocks[0]
    row = re.search(r"<tr><td>Saliency</td><td[^>]*>([^<]*)</td>", page).group(1)
    assert row == "degenerate on 1 of 4 inputs"  # never "ok"
    data = json.loads(html.unescape(re.search(
        r'data-testid="reproducibility"><summary>.*?</summary><pre>(.*?)</pre>', page, re.S).group(1)))
    assert data["methods"]["saliency"]["status"] == "degenerate on 1 of 4 inputs"


def test_counts_are_exact_and_skipped_methods_fold_into_one_line(planted) -> None:
    page = Report([planted]).html
    counts = re.search(r'data-testid="counts">(.*?)</p>', page).group(1)
    assert "3 methods ran, 1 skipped (of 4 asked for)" in counts
    assert "1 of those that ran gave a" in counts
    folded = re.findall(r"<details[^>]*><summary>(\d+) methods? skipped \(do not apply to this "
                        r"model\)</summary>", page)
    assert folded == ["1"]
    assert "<tr><td>Grad-CAM</td>" not in page  # not a row of the table


def test_json_is_folded_and_glossary_lists_only_the_terms_shown(planted) -> None:
    page = Report([planted]).html
    for key in ("reproducibility", "environment", "glossary"):
        tag = re.search(rf'<details[^>]*data-testid="{key}"[^>]*>', page).group(0)
        assert " open" not in tag
    assert not re.search(r"<h3>Reproducibility</h3><pre>", page)
    gloss = re.search(r'data-testid="glossary">(.*?)</details>', page, re.S).group(1)
    assert "<dt>faithfulness margin</dt>" in gloss and "<dt>deletion AUC</dt>" in gloss
    assert "<dt>degenerate map</dt>" in gloss
    assert "demographic parity" not in gloss and "flip rate" not in gloss
    assert re.search(r'<span class="uv-term" data-term="faithfulness_margin" title="[^"]+">', page)


def test_legends_follow_each_methods_sign_convention(planted) -> None:
    page = Report([planted]).html
    legend = re.search(r'data-testid="legend">(.*?)</p>', page).group(1)
    k = int(np.argmax(planted.scores[0]))
    assert re.search(rf"Signed maps \([^)]*Integrated Gradients[^)]*\): <b class=\"r\">red</b>: "
                     rf"towards {CLASSES[k]}, <b class=\"b\">blue</b>: against", legend)
    assert re.search(r"Magnitude maps \(Saliency\): .*how much the score depends on it, not in "
                     r"which direction", legend)
    sal = explanation_html(planted.explanations["saliency"])
    assert "Magnitude maps" in sal and "towards" not in sal
    assert "pushes towards the explained class" not in page


def test_image_maps_have_a_colour_bar_with_their_range() -> None:
    torch.manual_seed(3)
    net = TinyCNN(n_classes=3).eval()
    x = torch.rand(2, 1, 16, 16)
    sec = build_section(net, x, ["saliency", "integrated_gradients"], class_names=["cat", "dog", "owl"],
                        evaluate=False)
    page = Report([sec]).html
    check_self_contained(page, min_images=6)
    bars = re.findall(r'data-testid="colour-bar">.*?<div class="uv-cbar-l">(.*?)</div></div>', page)
    assert len(bars) == 4  # one per map: 2 inputs x 2 methods
    ig = sec.explanations["integrated_gradients"]
    from unveil.report.render import _heat2d, robust_scale

    s = robust_scale(_heat2d(np.asarray(ig.values[0]), (16, 16)))
    assert f"<span>\u2212{s:.2g}</span><span>0</span><span>+{s:.2g}</span>" in page  # signed
    assert "<span>0</span><span>magnitude</span>" in page  # saliency: from 0 up
    names = {"cat", "dog", "owl"}
    decisions = re.findall(r'data-testid="decision">Decision: <b>([^<]*)</b>', page)
    assert len(decisions) == 2 and set(decisions) <= names
    assert "class " not in re.sub(r'class="[^"]*"', "", page.split("<h3>Trust card")[0])


def test_no_class_names_are_said_once(credit) -> None:
    net, X, _ = credit
    sec = build_section(net, X[:2], ["integrated_gradients"], evaluate=False)
    page = Report([sec]).html
    assert page.count("(no class names given)") == 1
    assert re.search(r"Decision: <b>class \d \(no class names given\)</b>", page)
    lead = lead_method(sec, 0)
    assert lead.method == "integrated_gradients" and not lead.measured
    verdict = re.search(r'data-testid="verdict">(.*?)</p>', page).group(1)
    assert verdict.startswith("Not verified: Integrated Gradients was chosen without measuring it")


def test_input_outside_the_data_is_warned_about_beside_the_decision(credit) -> None:
    net, X, _ = credit
    x = X[:2].clone()
    x[1, 0] = 1000.0  # an income far beyond the data's range
    model = uv.Model(net, reference=X, feature_names=NAMES)
    sec = build_section(model, x, ["integrated_gradients"], class_names=CLASSES,
                        feature_names=NAMES, evaluate=False)
    blocks = Report([sec]).html.split('data-testid="input"')[1:]
    assert 'data-testid="outside"' not in blocks[0]
    warn = re.search(r'data-testid="outside">(.*?)</p>', blocks[1]).group(1)
    assert "outside the data the model knows: income = 1000" in warn
    assert blocks[1].index('data-testid="decision"') < blocks[1].index('data-testid="outside"') \
        < blocks[1].index('data-testid="reasons"')


def test_terms_in_the_narrative_get_a_tooltip_and_stay_escaped() -> None:
    from unveil.report.glossary import glossary_html, mark_terms

    out = mark_terms("the attributions of <X> miss the change in score by 40%; sanity check, "
                     "sanity check")
    assert "&lt;X&gt;" in out and "<X>" not in out
    assert out.count('data-term="completeness_gap"') == 1 and out.count('data-term="sanity_check"') == 1
    gloss = glossary_html(out)
    assert "<dt>completeness gap</dt>" in gloss and "<dt>sanity check</dt>" in gloss
    assert "faithfulness margin" not in gloss and glossary_html("no terms here") == ""


def test_reasons_for_words_follow_the_sign_convention() -> None:
    from types import SimpleNamespace

    from unveil.core.explanation import Explanation

    toks = [["good", "not", "great", "film"]]
    signed = Explanation(values=np.array([[0.2, -0.4, 0.5, 0.0]]), inputs=np.array([[3, 4, 5, 6]]),
                         method="integrated_gradients", modality="text", meta={"tokens": toks})
    rs = reasons(SimpleNamespace(reference=None), signed, 0)  # type: ignore[arg-type]  # a stand-in Section
    assert [r.text("positive") for r in rs] == [
        "\u201cgreat\u201d pushed towards positive", "\u201cgood\u201d pushed towards positive",
        "\u201cnot\u201d pushed against positive"]
    mag = Explanation(values=np.array([[0.2, 0.4, 0.5, 0.0]]), inputs=np.array([[3, 4, 5, 6]]),
                      method="saliency", modality="text", meta={"tokens": toks}, params={"abs": True})
    rs = reasons(SimpleNamespace(reference=None), mag, 0)  # type: ignore[arg-type]  # a stand-in Section
    assert [r.name for r in rs] == ["\u201cgreat\u201d", "\u201cnot\u201d", "\u201cgood\u201d"]
    assert all("does not say in which direction" in r.text("positive") for r in rs)
