"""Maps, tables and tokens drawn from an Explanation."""

from __future__ import annotations

import numpy as np
import torch

from unveil.core.explanation import Explanation
from unveil.core.groups import FeatureGroups, patches
from unveil.report.render import (
    _heat2d,
    display_kind,
    element_values,
    feature_table,
    map_for_agreement,
    robust_scale,
    token_spans,
    token_values,
)


def _exp(values, inputs, **kw) -> Explanation:
    return Explanation(values=np.asarray(values), inputs=np.asarray(inputs), method="m", **kw)


def test_group_values_expand_like_the_core() -> None:
    g = patches((1, 8, 8), size=4)  # 4 patches, labels shared by every sample
    v = np.random.default_rng(0).normal(size=(3, g.n_groups))
    e = _exp(v, np.zeros((3, 1, 8, 8), np.float32), groups=g.to_dict(), modality="image")
    assert np.allclose(element_values(e), g.expand(torch.as_tensor(v)).numpy())


def test_overlapping_masks_sum_like_the_core() -> None:
    g = patches((1, 6, 6), size=4, stride=2)  # overlapping: stored as masks
    assert g.mask_tensor is not None
    v = np.random.default_rng(1).normal(size=(2, g.n_groups))
    e = _exp(v, np.zeros((2, 1, 6, 6), np.float32), groups=g.to_dict(), modality="image")
    assert np.allclose(element_values(e), g.expand(torch.as_tensor(v)).numpy())


def test_per_sample_labels_with_unassigned_elements() -> None:
    labels = np.array([[0, 1, -1, 1], [1, 1, 0, -1]])
    g = FeatureGroups(n_groups=2, names=["a", "b"], kind="tokens", labels=torch.as_tensor(labels))
    v = np.array([[1.0, 2.0], [3.0, 4.0]])
    e = _exp(v, np.zeros((2, 4), np.int64), groups=g.to_dict(), modality="text")
    assert element_values(e).tolist() == [[1, 2, 0, 2], [4, 4, 3, 0]]


def test_heat_sums_channels_and_resizes() -> None:
    v = np.zeros((3, 4, 4))
    v[0, 1, 2], v[2, 1, 2] = 1.0, 2.0
    h = _heat2d(v, (4, 4))
    assert h[1, 2] == 3.0 and h.sum() == 3.0
    low = np.ones((2, 2))  # a layer-resolution map: bilinear resize keeps a constant constant
    assert np.allclose(_heat2d(low, (8, 8)), 1.0)


def test_feature_table_orders_by_magnitude_with_names() -> None:
    e = _exp([[0.1, -0.5, 0.3]], [[1.0, 2.0, 3.0]], feature_names=["a", "b", "c"])
    rows = feature_table(e, 0, top_k=2)
    assert [(r.name, r.value, r.attribution) for r in rows] == [("b", 2.0, -0.5), ("c", 3.0, 0.3)]
    assert display_kind(e) == "table"


def test_tokens_are_escaped_and_coloured_by_sign() -> None:
    e = _exp([[0.5, -0.5, 0.0]], [[5, 6, 7]], modality="text",
             meta={"tokens": [["<script>", "ok", "&"]]})
    html = token_spans(e, 0)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp;" in html
    assert "rgba(214,48,38" in html and "rgba(40,107,191" in html  # red and blue
    toks, v = token_values(e, 0)
    assert toks == ["<script>", "ok", "&"] and v.tolist() == [0.5, -0.5, 0.0]


def test_embedding_level_values_sum_per_token() -> None:
    v = np.arange(12.0).reshape(1, 3, 4)  # (N, T, D) attributions on embeddings
    e = _exp(v, np.zeros((1, 3), np.int64), modality="text")
    assert token_values(e, 0)[1].tolist() == [6.0, 22.0, 38.0]


def test_agreement_map_pools_images_to_regions() -> None:
    v = np.zeros((1, 1, 32, 32))
    v[0, 0, :2, :2] = -4.0  # one top-left 2x2 cell
    m = map_for_agreement(_exp(v, np.zeros((1, 1, 32, 32), np.float32), modality="image"), 0)
    assert m.shape == (256,) and m[0] == 4.0 and m[1:].sum() == 0.0


def test_robust_scale() -> None:
    assert robust_scale(np.zeros(5)) == 1.0
    v = np.r_[np.ones(999), 1000.0]  # one outlier does not set the scale
    assert robust_scale(v) < 10
