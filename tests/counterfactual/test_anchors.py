"""Anchors: precision on fresh samples, coverage counted on the data, unseen categorical values,
text anchors on a model whose decisive word is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unveil.audit.examples import credit_scorer, synthetic_credit
from unveil.counterfactual import anchor, anchor_text
from unveil.errors import InputError, OptionError


def _fresh_precision(a, model, x, data, n, seed):
    """Precision of an anchor on new draws from D(.|A), sampled here independently: a random data
    row whose anchored columns are redrawn from the data rows meeting that one predicate."""
    rng = np.random.default_rng(seed)
    rows = data[rng.integers(0, data.shape[0], n)].copy()
    for rule in a.rules:
        j, lo, hi, eq = rule
        col = data[:, j]
        sat = col[col == lo] if eq else col[(col > lo) & (col <= hi)]
        sat = sat if sat.size else np.array([x[j]])
        rows[:, j] = sat[rng.integers(0, sat.size, n)]
    with torch.no_grad():
        got = model(torch.tensor(rows, dtype=torch.float32)).argmax(1).numpy()
    return float((got == a.label).mean())


@pytest.fixture(scope="module")
def credit():
    X, _, names = synthetic_credit(3000, seed=0)
    return X, names


def test_precision_on_fresh_samples_and_coverage_on_the_data(credit):
    X, names = credit
    net = credit_scorer()
    found = 0
    for i in range(6):
        a = anchor(net, X[i], data=X, feature_names=names, threshold=0.9, seed=i)
        assert a.holds(X[i:i + 1])[0]  # the row meets its own anchor
        # coverage: the share of data rows meeting every predicate, counted directly
        meets = np.ones(X.shape[0], bool)
        for j, lo, hi, eq in a.rules:
            meets &= (X[:, j] == lo) if eq else ((X[:, j] > lo) & (X[:, j] <= hi))
        assert a.coverage == pytest.approx(meets.mean(), abs=1e-12)
        if not a.valid:
            continue
        found += 1
        n = 4000
        p = _fresh_precision(a, net, X[i], X, n, seed=100 + i)
        se = np.sqrt(0.9 * 0.1 / n)
        assert p >= a.threshold - 2 * se, (str(a), p)
    assert found >= 3  # most rows get an anchor at this threshold


def test_unseen_categorical_value_gives_precision_one_and_coverage_zero(credit):
    X, names = credit

    class ByGender(nn.Module):  # decides on gender alone; gender 2 never occurs in the data
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            g = (x[:, 4] == 2).float()
            return torch.stack([1 - g, g], 1)

    x = X[0].copy()
    x[4] = 2.0
    a = anchor(ByGender().eval(), x, data=X, feature_names=names, categorical=["gender"])
    assert a.valid and a.features == ["gender"] and a.label == 1
    assert a.precision == 1.0 and a.coverage == 0.0


def test_a_model_that_never_changes_needs_no_predicate(credit):
    X, names = credit
    const = nn.Linear(6, 2)
    with torch.no_grad():
        const.weight.zero_()
        const.bias.copy_(torch.tensor([0.0, 1.0]))
    a = anchor(const.eval(), X[0], data=X, feature_names=names)
    assert a.predicates == [] and a.precision == 1.0 and a.coverage == 1.0


def test_text_anchor_finds_the_decisive_word():
    class Bag(nn.Module):  # positive exactly when token 7 occurs
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            c = (ids == 7).sum(1).float()
            return torch.stack([0.5 - c, c - 0.5], 1)

    ids = torch.tensor([3, 5, 7, 2, 9, 4])
    words = "the movie was great fun indeed".split()
    a = anchor_text(Bag().eval(), ids, mask_id=0, tokens=words, class_names=["neg", "pos"])
    assert a.features == ["was"] and a.precision == 1.0 and a.class_name == "pos"
    data = torch.tensor([[7, 1, 1], [1, 2, 3], [7, 7, 0], [4, 4, 4]])
    b = anchor_text(Bag().eval(), ids, mask_id=0, tokens=words, data=data)
    assert b.coverage == pytest.approx(0.5)  # two of four texts contain the anchored word
    assert "\u201cwas\u201d" in b.sentence


def test_bad_input(credit):
    X, names = credit
    with pytest.raises(OptionError, match="threshold"):
        anchor(credit_scorer(), X[0], data=X, threshold=1.5)
    with pytest.raises(InputError, match="one row of 6"):
        anchor(credit_scorer(), X[0, :3], data=X)
    with pytest.raises(OptionError, match="did you mean 'gender'"):
        anchor(credit_scorer(), X[0], data=X, feature_names=names, categorical=["gendr"])
