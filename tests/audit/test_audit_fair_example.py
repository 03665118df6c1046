"""The real example on statsmodels' bundled `fair` data runs and reports consistent figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("statsmodels")


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared test machine is busy; small nets train faster on one
    yield
    torch.set_num_threads(n)


def test_fair_example_runs(one_thread):
    from unveil.audit.examples import fair_example, load_fair

    X, y, names = load_fair()
    assert X.shape == (6366, 8) and y.mean() == pytest.approx(0.3225, abs=1e-3)
    ex = fair_example(n_explain=60, n_background=16)
    a = ex.audit
    assert 0.65 < ex.accuracy < 0.8  # better than the 0.68 of always answering "no affair"
    assert a.sensitive == "religious" and a.groups == ["1", "2", "3", "4"]
    assert a.n_rows == len(ex.X_test) == round(0.25 * 6366)
    counts = {g: m["count"] for g, m in a.group_metrics.items()}
    assert sum(counts.values()) == a.n_rows
    assert sum(a.attribution_shares.values()) == pytest.approx(1.0)
    assert a.verdict in ("pass", "review", "fail") and "religious" in ex.summary()
    # the same network blind to the column: no direct use can be found
    blind = fair_example(ignore_sensitive=True, n_explain=60, n_background=16).audit
    assert blind.flip_rate == 0.0 and blind.sensitive_share < 1e-6
    assert "religious" not in [f.feature for f in blind.flags if f.kind == "sensitive"]
    assert np.isfinite(blind.demographic_parity_difference)
