"""Projection onto the constraints: whatever a search proposes, the projected row breaks none of
the projectable constraints, and a row already inside is left as it is."""

from __future__ import annotations

import numpy as np
import pytest

from unveil.counterfactual.constraints import KINDS, Constraints, Space, as_constraints
from unveil.errors import InputError, OptionError

NAMES = ["a", "b", "c", "d", "e"]


def _space() -> tuple[Space, np.ndarray]:
    rng = np.random.default_rng(0)
    data = np.column_stack([rng.normal(size=300), rng.integers(0, 5, 300), rng.normal(size=300),
                            rng.choice([1.0, 2.5, 7.0], 300), rng.normal(size=300)])
    spec = Constraints(immutable=["a"], increasing=["b"], decreasing=["e"], ranges={"c": (-1.0, 0.5), "b": (0, 3)},
                       integer=["b"], categorical=["d"])
    return Space.build(spec, NAMES, data), data


def test_projected_rows_break_no_projectable_constraint():
    sp, data = _space()
    rng = np.random.default_rng(1)
    x0 = sp.snap(data[:200].copy(), data[:200].copy())  # originals inside the box
    z = x0 + 3 * rng.normal(size=x0.shape)
    p = sp.snap(z, x0)
    viol = sp.violations(p, x0)
    assert not viol[:, : KINDS.index("feasible")].any()
    assert (p[:, 0] == x0[:, 0]).all() and (p[:, 1] >= x0[:, 1]).all() and (p[:, 4] <= x0[:, 4]).all()
    assert set(np.unique(p[:, 3])) <= {1.0, 2.5, 7.0}
    # a row that already satisfies everything is a fixed point
    np.testing.assert_array_equal(sp.snap(x0, x0), x0)
    # and the violations are seen when they are there
    bad = x0.copy()
    bad[:, 0] += 1.0
    bad[:, 3] = 2.0
    v = sp.violations(bad, x0)
    assert v[:, KINDS.index("immutable")].all() and v[:, KINDS.index("categorical")].all()


def test_feasibility_function_is_checked_and_must_answer_per_row():
    sp, data = _space()
    sp.feasible = lambda r: r[:, 2] < 0
    v = sp.violations(data[:50], data[:50])
    np.testing.assert_array_equal(v[:, KINDS.index("feasible")], data[:50, 2] >= 0)
    sp.feasible = lambda r: True
    with pytest.raises(InputError, match="one boolean per row"):
        sp.violations(data[:5], data[:5])


def test_bad_specs():
    with pytest.raises(OptionError, match="did you mean 'ranges'"):
        as_constraints({"range": {"a": (0, 1)}})
    with pytest.raises(OptionError, match="low 2.0 is above high 1.0"):
        Space.build(Constraints(ranges={"a": (2, 1)}), NAMES, np.zeros((3, 5)))
    with pytest.raises(OptionError, match="out of range"):
        Space.build(Constraints(immutable=[9]), NAMES, np.zeros((3, 5)))
