"""Agreement, concentration and location: against scipy and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from unveil.report._stats import agreement, concentration, region, spearman, top_k_overlap


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 200).astype(float)  # many ties
    b = a + rng.normal(0, 2, 200)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert 0.3 < spearman(a, b) < 0.95  # the case is not trivial
    assert np.isnan(spearman(np.ones(5), np.arange(5)))


def test_top_k_overlap() -> None:
    a = np.array([5, 4, 3, 2, 1.0])
    assert top_k_overlap(a, a, 2) == 1.0
    assert top_k_overlap(a, -a, 2) == 0.0
    assert top_k_overlap(a, np.array([5, 0, 3, 2, 1.0]), 2) == 0.5


def test_agreement_matrix() -> None:
    x = np.arange(20.0)
    ag = agreement({"a": x, "b": x ** 2, "c": -x})
    assert ag.rank[0, 1] == pytest.approx(1.0) and ag.rank[0, 2] == pytest.approx(-1.0)
    assert np.allclose(ag.rank, ag.rank.T)
    assert ag.mean_rank() == pytest.approx((1 - 1 - 1) / 3)
    pairs = ag.extreme_pairs()
    assert pairs is not None
    low, high = pairs
    assert high[2] == pytest.approx(1.0) and low[2] == pytest.approx(-1.0)


def test_concentration_closed_form() -> None:
    heat = np.zeros(100)
    heat[:10] = 1.0  # all positive mass in 10% of the elements
    assert concentration(heat) == pytest.approx(1.0)
    assert concentration(np.ones(100)) == pytest.approx(0.1)
    assert concentration(-np.ones(10)) is None


@pytest.mark.parametrize("pos,words", [((0, 0), "the upper left"), ((15, 15), "the lower right"),
                                       ((8, 8), "the centre"), ((1, 8), "the upper part"),
                                       ((8, 15), "the right side")])
def test_region_names_the_blob(pos: tuple[int, int], words: str) -> None:
    heat = np.zeros((16, 16))
    heat[pos] = 1.0
    heat[15 - pos[0], 15 - pos[1]] = -5.0  # negative evidence elsewhere is ignored
    assert region(heat) == words


def test_agreement_over_few_features_is_not_narrated() -> None:
    from unveil.report.narrative import Prediction, narrate

    p = Prediction(label="x", prob=0.9, target="x")
    few = agreement({"a": np.arange(3.0), "b": -np.arange(3.0)})
    assert few.size == 3 and narrate(p, [], few, kind="table").cautions == []
    many = agreement({"a": np.arange(8.0), "b": -np.arange(8.0)})
    assert "disagree" in " ".join(narrate(p, [], many, kind="table").cautions)
