"""The HTML report: self-contained, faithful to the explanations, honest about failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from _check import check_self_contained
from torch import nn

import unveil as uv
from _util import TinyCNN, assert_unchanged, mlp, snapshot
from unveil.errors import BaselineError, OptionError, UnknownMethodError
from unveil.report import Report, build_section, report


def _linear(w: list[float]) -> nn.Module:
    lin = nn.Linear(len(w), 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0] * len(w), w]))
        lin.bias.zero_()
    return lin.eval()


def test_image_report_is_self_contained_and_has_all_maps(tmp_path) -> None:
    net = TinyCNN().eval()
    snap = snapshot(net)
    x = torch.rand(3, 1, 16, 16)
    rep = report(net, x, methods=["saliency", "integrated_gradients"],
                 options={"integrated_gradients": {"n_steps": 8}}, max_samples=2)
    assert_unchanged(net, snap)
    page = rep.html
    pngs = check_self_contained(page, min_images=2 * 3)  # 2 shown inputs x (input + 2 maps)
    assert len(pngs) == 6
    assert "1 more inputs explained but not shown" in page
    path = rep.save(tmp_path / "r")
    assert path.name == "r.html" and path.read_text(encoding="utf-8") == page


def test_reproducibility_block() -> None:
    net = mlp().eval()
    rep = report(net, torch.randn(2, 6), methods=["integrated_gradients"], seed=7,
                 options={"integrated_gradients": {"n_steps": 5}})
    exp = rep.explanations["integrated_gradients"]
    block = re.search(r'<details data-testid="reproducibility"><summary>[^<]*</summary><pre>(.*?)</pre>',
                      rep.html, re.S)
    assert block is not None
    data = json.loads(block.group(1).replace("&quot;", '"').replace("&#x27;", "'"))
    assert data["fingerprint"] == exp.fingerprint == uv.Model(net).fingerprint()
    m = data["methods"]["integrated_gradients"]
    assert m["params"]["n_steps"] == 5 and m["seed"] == 7 and m["status"] == "ok"
    env = re.search(r'data-testid="environment"><summary>[^<]*</summary><pre>(.*?)</pre>', rep.html,
                    re.S).group(1)
    assert f"&quot;torch&quot;: &quot;{torch.__version__}&quot;" in env


def test_narrative_names_the_decisive_feature() -> None:
    # class 1's score is 3 * c: for positive inputs, c is what pushes towards class 1
    net = _linear([0.0, 0.0, 3.0, 0.0])
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    rep = report(net, x, methods=["integrated_gradients", "saliency"], target=1,
                 feature_names=["a", "b", "c", "d"], class_names=["no", "yes"], evaluate=False)
    text = re.search(r'class="uv-narrative">([^<]*)', rep.html).group(1)
    assert "The model predicts yes with 95% confidence" in text  # softmax(0, 3)[1] = 0.953
    assert ("According to Integrated Gradients (its faithfulness was not measured), the features "
            "that pushed the prediction towards yes most were c.") in text
    assert "c = 1 pushed towards yes" in rep.html  # the reason, with the input's value
    assert "c is among the 1 strongest features in 2" in text


def test_failures_are_recorded_or_raised() -> None:
    net = mlp().eval()
    x = torch.randn(2, 6)
    bad = {"integrated_gradients": {"baseline": torch.zeros(2, 5)}}  # fails when it runs
    rep = report(net, x, methods=["saliency", "integrated_gradients"], on_error="record", options=bad)
    runs = {r.method: r for r in rep.sections[0].runs}
    assert runs["saliency"].status == "ok"
    assert runs["integrated_gradients"].status == "error"
    assert "cannot be broadcast to inputs of shape (2, 6)" in runs["integrated_gradients"].error
    assert rep.errors == [("Sequential", "integrated_gradients", runs["integrated_gradients"].error)]
    assert "baseline of shape (2, 5) cannot be broadcast" in rep.html
    with pytest.raises(BaselineError, match="cannot be broadcast"):
        report(net, x, methods=["integrated_gradients"], options=bad)
    with pytest.raises(UnknownMethodError, match="no method named 'salincy'"):
        report(net, x, methods=["salincy"], on_error="record")
    # an option the declaration refuses stops the report before any work, even when recording
    for opts in ({"n_steps": 0}, {"n_step": 8}):
        with pytest.raises(OptionError, match="n_steps"):
            report(net, x, methods=["saliency", "integrated_gradients"], on_error="record",
                   options={"integrated_gradients": opts})
    with pytest.raises(OptionError, match="no method takes the option 'n_step'"):
        report(net, x, methods=["saliency"], budget={"n_step": 8}, on_error="record")


def test_gradient_method_on_numpy_model_is_skipped_or_refused() -> None:
    w = np.array([1.0, -2.0, 0.5])

    def f(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return np.stack([a @ w, -(a @ w)], axis=1)

    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    sec = build_section(f, x, ["saliency"], on_error="record")
    assert sec.runs[0].status == "skipped" and "needs gradients" in sec.runs[0].skipped
    check_self_contained(Report([sec]).html)
    with pytest.raises(OptionError, match="'saliency' cannot explain this model"):
        build_section(f, x, ["saliency"])


def test_default_methods_fit_the_model() -> None:
    sec = build_section(mlp().eval(), torch.randn(2, 6))
    names = [r.method for r in sec.runs]
    assert 1 <= len(names) <= 3 and names[0] == "integrated_gradients"
    assert all(r.status == "ok" for r in sec.runs)


def test_group_level_and_text_explanations_render() -> None:
    from unveil.core.explanation import Explanation
    from unveil.core.groups import patches
    from unveil.report import explanation_html

    g = patches((1, 8, 8), size=4)
    e = Explanation(values=np.arange(8.0).reshape(2, 4), inputs=np.random.rand(2, 1, 8, 8),
                    method="occlusion", groups=g.to_dict(), modality="image",
                    targets=np.array([1, 0]), outputs=np.array([0.5, 0.25]))
    check_self_contained(explanation_html(e), min_images=2)
    t = Explanation(values=np.array([[0.2, -0.1]]), inputs=np.array([[3, 4]]), method="saliency",
                    modality="text", meta={"tokens": [["good", "<b>"]]})
    page = explanation_html(t)
    check_self_contained(page)
    assert "good" in page and "&lt;b&gt;" in page


def test_import_report_is_light() -> None:
    code = ("import sys, unveil.report; print([m for m in ('matplotlib', 'fastapi', 'jinja2') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_trust_card_reads_the_metrics_figures() -> None:
    metrics = pytest.importorskip("unveil.metrics")
    torch.manual_seed(1)
    net = mlp(n_in=6, n_out=3).eval()
    x = torch.randn(4, 6)
    rep = report(net, x, methods=["integrated_gradients", "saliency"], sanity=["saliency"],
                 metrics=["sparseness"], options={"integrated_gradients": {"n_steps": 8}})
    t = rep.sections[0].trust
    exp = rep.explanations["integrated_gradients"]
    ref = metrics.trust_card(net, exp, checks=["faithful"], seed=0).verdicts["faithful"]
    got = t.verdicts["integrated_gradients"]["faithful"]
    assert got["answer"] == ref.answer
    assert got["figures"]["deletion_auc"] == pytest.approx(ref.figures["deletion_auc"])
    assert "sanity" in t.verdicts["saliency"] and "sanity" not in t.verdicts["integrated_gradients"]
    assert t.quality["saliency"]["sparseness"] == pytest.approx(
        metrics.sparseness(net, rep.explanations["saliency"]).value)
    page = rep.html
    assert f"deletion AUC</span> {got['figures']['deletion_auc']:.3g} vs" in page
    assert f"margin</span> {got['figures']['faithfulness_margin']:+.3g}" in page
    assert re.search(r"passes <span[^>]*>sanity</span>\?", page) and "sparseness" in page


def test_global_section_has_surrogate_rules() -> None:
    surrogate = pytest.importorskip("unveil.surrogate")
    torch.manual_seed(2)
    net = mlp(n_in=4, n_out=2).eval()
    data = torch.randn(200, 4)
    names = ["a", "b", "c", "d"]
    rep = report(net, data[:3], methods=["saliency"], data=data, feature_names=names,
                 evaluate=False)
    g = rep.sections[0].global_facts
    ref = surrogate.distill(net, data, kind="tree", max_depth=3, feature_names=names)
    assert g.fidelity == pytest.approx(ref.fidelity()) and g.rules == str(ref.rules())
    assert "held-out rows" in rep.html
    imp = dict(g.importance["saliency"])  # mean |attribution| over the explained rows
    e = rep.explanations["saliency"]
    assert imp["a"] == pytest.approx(float(np.abs(e.values[:, 0]).mean()))


def test_retry_options_go_only_to_methods_that_ask(monkeypatch) -> None:
    from unveil.attribution import Attributor, Partial
    from unveil.core import registry
    from unveil.core.options import OptionSet
    from unveil.errors import OptionError as OptErr

    class NeedsBackground(Attributor):
        """Input minus the background mean (refuses without a background)."""

        name = "needs_background"

        def _attribute(self, call, *, background=None):
            if background is None:
                raise OptErr("'needs_background' averages over a background set: pass background=")
            return Partial(values=call.x - torch.as_tensor(background).mean(0))

    info = registry.MethodInfo("needs_background", NeedsBackground, "test", ("tabular",), False,
                               False, False, "", options=OptionSet("needs_background", (),
                                                                   common=("background",)))
    monkeypatch.setitem(registry._REGISTRY, "needs_background", info)
    bg = torch.ones(5, 6)
    x = torch.randn(2, 6)
    sec = build_section(mlp().eval(), x, ["needs_background", "integrated_gradients"],
                        retry_options={"background": bg}, evaluate=False)
    runs = {r.method: r for r in sec.runs}
    assert runs["needs_background"].status == "ok"
    assert np.allclose(runs["needs_background"].explanation.values, (x - 1).numpy())
    assert "background" not in runs["integrated_gradients"].options  # it did not ask
    with pytest.raises(OptErr, match="pass background="):
        build_section(mlp().eval(), x, ["needs_background"], evaluate=False)
