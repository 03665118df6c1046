"""``evaluate`` (routing of options, exp.quality) and the trust card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _mutil import digits, linear, make_exp

import unveil as uv
from unveil.errors import InputError, OptionError
from unveil.metrics import METRICS, deletion, evaluate, list_metrics, trust_card


def test_evaluate_fills_quality_and_routes_options(tmp_path) -> None:
    model = linear(8, 3)
    x = torch.randn(6, 8)
    exp = uv.explain(model, x, method="integrated_gradients", n_steps=8)
    res = evaluate(model, exp, ["deletion", "infidelity", "max_sensitivity", "sparseness"], seed=2,
                   n_samples=4, deletion={"n_steps": 4, "output": "logits"})
    assert list(exp.quality) == ["deletion", "infidelity", "max_sensitivity", "sparseness"]
    assert res["infidelity"].value < 1e-9  # IG on a linear model
    assert res["infidelity"].params["n_samples"] == 4 and res["max_sensitivity"].params["n_samples"] == 4
    assert res["deletion"].params["n_steps"] == 4 and res["deletion"].params["seed"] == 2
    direct = deletion(model, exp, n_steps=4, output="logits", seed=2)
    np.testing.assert_allclose(res["deletion"].per_sample, direct.per_sample)
    assert exp.quality["deletion"]["value"] == pytest.approx(direct.value)
    json.dumps(exp.quality)  # JSON-safe
    back = uv.load(exp.save(tmp_path / "e.npz"))
    assert back.quality["deletion"]["value"] == pytest.approx(direct.value)
    assert set(list_metrics()) == set(METRICS) and "road" in METRICS
    default = evaluate(model, exp)
    assert list(default) == ["deletion", "insertion", "sparseness"]


def test_evaluate_localisation_and_errors() -> None:
    model = linear(3, 2, image=(1, 4, 4))
    x = torch.rand(2, 1, 4, 4)
    exp = uv.explain(model, x, method="saliency")
    res = evaluate(model, exp, "pointing_game", box=[[0, 0, 4, 4], [0, 0, 4, 4]])
    np.testing.assert_allclose(res["pointing_game"].per_sample, 1.0)
    with pytest.raises(OptionError, match="Did you mean 'deletion'"):
        evaluate(model, exp, ["deleton"])
    with pytest.raises(OptionError, match="no chosen metric takes"):
        evaluate(model, exp, ["deletion"], n_step=3)
    with pytest.raises(OptionError, match="takes no option"):
        evaluate(model, exp, ["deletion"], deletion={"radius": 1})
    with pytest.raises(OptionError, match="not among the metrics"):
        evaluate(model, exp, ["deletion"], insertion={"n_steps": 3})
    with pytest.raises(OptionError, match="must be a dict"):
        evaluate(model, exp, ["deletion"], deletion=3)
    with pytest.raises(InputError, match="judges an Explanation"):
        evaluate(model, exp.values)  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(InputError, match="exactly one of mask"):
        evaluate(model, exp, ["relevance_mass"])


def test_trust_card_on_digits() -> None:
    model, xs, _ = digits()
    exp = uv.explain(model, xs[:20], method="saliency")
    card = trust_card(model, exp, max_samples=6, n_draws=4, sanity_samples=4)
    assert card.n_samples == 6 and list(card.verdicts) == ["faithful", "robust", "sanity", "agree"]
    f = card.verdicts["faithful"]
    gap = f.figures["insertion_auc"] - f.figures["deletion_auc"]
    chance = f.figures["random_insertion_auc"] - f.figures["random_deletion_auc"]
    assert f.figures["insertion_minus_deletion"] == pytest.approx(gap)
    assert f.figures["random_order"] == pytest.approx(chance)
    assert f.answer is (gap > chance)
    assert f.answer is True  # the gradient of a trained CNN beats a random order on digits
    s = card.verdicts["sanity"]
    assert s.answer is True and s.figures["spearman_abs_after_randomisation"] < 0.5
    assert list(s.figures["per_layer"]) == ["classifier.2", "features.6", "features.3", "features.0"]
    r = card.verdicts["robust"]
    assert r.answer is (r.figures["max_sensitivity"] < r.figures["threshold"])
    a = card.verdicts["agree"]
    assert a.answer is (a.figures["mean_rank_correlation"] >= 0.5)
    assert "rank_correlation_integrated_gradients" in a.figures
    assert exp.quality["trust"]["verdicts"]["sanity"]["answer"] is True
    json.dumps(exp.quality["trust"])
    text = str(card)
    assert "Faithful?" in text and "rule:" in text and "<table>" in card._repr_html_()
    assert card.trusted is (all(v.answer for v in card.verdicts.values()))


def test_trust_card_reports_checks_it_cannot_run() -> None:
    model = linear(6, 3)
    x = torch.randn(4, 6)
    exp = make_exp(np.random.default_rng(0).normal(size=(4, 6)), x, np.zeros(4, dtype=int), method="handmade")
    card = trust_card(model, exp, checks=["faithful", "robust"])
    assert card.verdicts["faithful"].answer in (True, False)
    rob = card.verdicts["robust"]
    assert rob.answer is None and "handmade" in rob.figures["reason"]
    assert card.trusted in (False, None)
    with pytest.raises(OptionError, match="unknown checks"):
        trust_card(model, exp, checks=["fast"])
    with pytest.raises(OptionError, match="takes no option"):
        trust_card(model, exp, treshold=0.1)


def test_importing_metrics_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, unveil.metrics; heavy = [m for m in ('skimage', 'matplotlib', "
            "'quantus', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_evaluate_sanity_and_random_logit() -> None:
    from _util import TinyCNN

    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.rand(5, 1, 16, 16)
    exp = uv.explain(net, x, method="saliency")
    res = evaluate(net, exp, ["sanity", "random_logit"], seed=3,
                   sanity={"threshold": 0.3, "measures": ["spearman_abs"], "max_samples": 4})
    san = res["sanity"]
    direct = uv.metrics.sanity_check(net, x[:4], method="saliency", threshold=0.3, seed=3,
                                     measures=["spearman_abs"], target=torch.as_tensor(exp.targets[:4]))
    assert san.value == pytest.approx(direct.final)
    assert san.params["passed"] is direct.passed and san.params["threshold"] == 0.3
    assert san.per_sample.shape == (4,)
    assert exp.quality["sanity"]["details"]["layers"] == direct.layers
    assert 0 <= res["random_logit"].value <= 1
