"""The concept pages: self-contained, every concept named with its heat map, escaped names."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from report._check import check_self_contained
from unveil.concepts import discover_concepts, top_concepts
from unveil.report.crp import concept_discovery_html, concept_relevance_html, heat_uri, page


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3)).eval()


def test_concept_relevance_page_is_self_contained_and_names_concepts() -> None:
    model, x = cnn(), torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    res = top_concepts(model, x, layer="0", k=2, names={0: "<edge>"})
    res.with_references(model, torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1)), k=2)
    html = page(concept_relevance_html(res), "t")
    pngs = check_self_contained(html, min_images=2 * 3 + 2 * len(res.references))
    assert pngs
    for row in res.concepts:
        for chans in row:
            assert res.concept_name(chans).replace("<", "&lt;").replace(">", "&gt;") in html
    assert "<edge>" not in html  # escaped


def test_discovery_page_ranks_concepts() -> None:
    model, x = cnn(), torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    res = discover_concepts(model, x, layer="1", n_concepts=3, k=2, n_designs=4)
    html = page(concept_discovery_html(res), "t")
    check_self_contained(html, min_images=3 * 2)
    first = res.concept_name(res.ranking()[0][0])
    assert html.index(f"{first} — importance") < min(
        html.index(f"{res.concept_name(j)} — importance") for j, _ in res.ranking()[1:])


def test_heat_map_of_a_non_image_is_none() -> None:
    assert heat_uri(np.zeros(5), np.zeros(5)) is None
