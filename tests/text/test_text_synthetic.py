"""The synthetic task: its construction, and IG on token ids finding the decisive token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unveil as uv
from unveil.errors import OptionError
from unveil.text.synthetic import (
    CLS_ID,
    NEG_ID,
    PAD_ID,
    POS_ID,
    make_synthetic_task,
    synthetic_example,
)


def test_task_has_exactly_one_decisive_token_per_class():
    task = make_synthetic_task(300, 50, seed=3)
    ids, y, pos = task.X_train, task.y_train, task.decisive_train
    assert (ids[:, 0] == CLS_ID).all()
    sentiment = (ids == POS_ID) | (ids == NEG_ID)
    for c, word in ((0, NEG_ID), (1, POS_ID)):
        rows = y == c
        assert (sentiment[rows].sum(1) == 1).all()
        assert (ids[rows, pos[rows]] == word).all()
    assert (sentiment[y == 2].sum(1) == 0).all() and (pos[y == 2] == -1).all()
    lengths = (ids != PAD_ID).sum(1)
    assert ((ids != PAD_ID).long().diff(dim=1) <= 0).all()  # padding only at the end
    assert lengths.min() >= 6 and set(y.tolist()) == {0, 1, 2}
    with pytest.raises(OptionError, match="min_len"):
        make_synthetic_task(seq_len=4, min_len=6)


@pytest.fixture(scope="module")
def synthetic():
    model, task = synthetic_example()
    keep = task.decisive_test >= 0
    return model, task.X_test[keep], task.decisive_test[keep]


def test_integrated_gradients_ranks_the_decisive_token_first(synthetic, record_property):
    model, ids, decisive = synthetic
    exp = uv.explain(model, ids, method="integrated_gradients", n_steps=32)
    assert exp.values.shape == ids.shape  # one value per token, summed over the hidden axis
    v = torch.as_tensor(exp.values).clone()
    v[:, 0] = -torch.inf
    v[ids == PAD_ID] = -torch.inf
    rate = float((v.argmax(1) == decisive).float().mean())
    record_property("integrated_gradients_top1", rate)
    assert rate >= 0.9, f"IG ranks the decisive token first on {rate:.1%}"


def test_integrated_gradients_matches_captum_layer_ig(synthetic):
    captum_attr = pytest.importorskip("captum.attr")
    model, ids, _ = synthetic
    ids = ids[:12]
    exp = uv.explain(model, ids, method="integrated_gradients", n_steps=24, target=1)
    lig = captum_attr.LayerIntegratedGradients(model, model.embed)
    ref = lig.attribute(ids, baselines=torch.zeros_like(ids), target=1, n_steps=24,
                        method="gausslegendre").sum(-1)
    np.testing.assert_allclose(exp.values, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(exp.values).max() > 1e-2  # guard
