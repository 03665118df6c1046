"""The demo's helpers, and a small demo run in-process with its trust card."""

from __future__ import annotations

import pytest
import torch
from _check import check_self_contained

import unveil as uv
from unveil.report.demo import coarse_groups, run_demo


def test_coarse_groups_for_the_breast_cancer_names() -> None:
    names = uv.zoo.load_dataset("breast_cancer_mlp").feature_names
    g = coarse_groups("tabular", (30,), names)
    assert g.n_groups == 10 and g.names[:3] == ["radius", "texture", "perimeter"]
    members = [names[j] for j in range(30) if int(g.labels[0, j]) == 0]
    assert members == ["mean radius", "radius error", "worst radius"]


def test_coarse_groups_fallbacks() -> None:
    g = coarse_groups("image", (1, 32, 32))
    assert g.n_groups == 4 and g.masks(0).sum(dim=(1, 2, 3)).tolist() == [256] * 4
    g = coarse_groups("tabular", (25,), None)
    assert g.n_groups == 10 and torch.equal(g.labels[0], torch.tensor(
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]))
    assert coarse_groups("text", (12,)) is None


def test_small_demo_has_a_trust_card(tmp_path) -> None:
    pytest.importorskip("unveil.metrics")
    lines: list[str] = []
    res = run_demo(tmp_path / "d", models=["breast_cancer_mlp"],
                   methods=["saliency", "integrated_gradients"], n_samples=2, audit=False,
                   echo=lines.append)
    assert res.path == tmp_path / "d" / "report.html" and res.errors == []
    assert res.audit_path is None and not (tmp_path / "d" / "audit.html").exists()
    assert lines[0].startswith("loading zoo:breast_cancer_mlp")
    page = res.path.read_text(encoding="utf-8")
    check_self_contained(page)
    sec = res.report.sections[0]
    assert sec.trust.answer("saliency", "sanity") is not None  # the demo checks saliency
    assert sec.trust.answer("integrated_gradients", "faithful") is not None
    assert "Rules of a depth-3 surrogate tree" in page
    # a reader meets the decision first; the method table and the JSON come after, folded
    assert page.index('data-testid="decision">Decision: <b>') < page.index("<h3>Methods</h3>")
    assert "<pre>{" not in page.split('data-testid="reproducibility"')[0]
    assert "2 methods ran" in page
    # the rules read in the data set's own units (the network standardises inside)
    import html

    import unveil as uv

    data = uv.zoo.load_dataset("breast_cancer_mlp")
    sur = uv.distill(uv.zoo.breast_cancer_mlp(), data.X_train[:256], kind="tree", max_depth=3,
                     feature_names=data.feature_names, class_names=data.class_names)
    assert html.escape(str(sur.rules()).splitlines()[0]) in page
