"""Explanation: save/load round-trips exactly, indexing, no pickle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unveil as uv
from _util import TinyCNN
from unveil.core.explanation import Explanation
from unveil.errors import InputError


def _assert_same(a: Explanation, b: Explanation) -> None:
    for name in ("values", "inputs", "targets", "outputs", "baseline_outputs", "delta", "stderr"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            assert va.dtype == vb.dtype and np.array_equal(va, vb), name
    for k in ("method", "params", "seed", "n_evals", "timings", "modality", "feature_names", "class_names", "meta"):
        assert getattr(a, k) == getattr(b, k), k
    assert a.fingerprint == b.fingerprint
    assert a.extras.keys() == b.extras.keys()
    for k in a.extras:
        assert np.array_equal(a.extras[k], b.extras[k])


def test_round_trip(tmp_path) -> None:
    net = TinyCNN().eval()
    e = uv.explain(net, torch.rand(3, 1, 16, 16), method="integrated_gradients", n_steps=8)
    e.extras["cam"] = np.arange(6.0).reshape(3, 2)
    e.meta["layer"] = "features.3"
    e.groups = {"kind": "patches", "n_groups": 4, "names": ["a", "b", "c", "d"], "labels": np.zeros((1, 1, 16, 16), np.int64)}
    path = e.save(tmp_path / "e.npz")
    back = uv.load(path)
    _assert_same(e, back)
    assert back.groups is not None and np.array_equal(back.groups["labels"], e.groups["labels"])
    assert back.groups["names"] == ["a", "b", "c", "d"]
    assert e.fingerprint is not None and len(e.fingerprint) == 16


def test_load_never_unpickles(tmp_path) -> None:
    p = tmp_path / "evil.npz"
    np.savez(p, values=np.array([object()], dtype=object))
    with pytest.raises(InputError, match="not an unveil Explanation"):
        uv.load(p)
    p2 = tmp_path / "evil2.npz"
    meta = np.frombuffer(b'{"format": "unveil.explanation/1"}', dtype=np.uint8)
    np.savez(p2, __meta__=meta, values=np.array([object()], dtype=object))
    with pytest.raises(InputError, match=r"cannot load .*evil2\.npz: "):  # more in test_explanation_load
        uv.load(p2)


def test_indexing_keeps_batch_axis() -> None:
    e = uv.explain(TinyCNN().eval(), torch.rand(4, 1, 16, 16), method="saliency")
    one = e[2]
    assert one.values.shape == (1, 1, 16, 16)
    assert np.array_equal(one.values[0], e.values[2]) and one.targets[0] == e.targets[2]
    sub = e[[0, 3]]
    assert len(sub) == 2 and np.array_equal(sub.inputs[1], e.inputs[3])


def test_repr_is_one_short_line() -> None:
    """A notebook user who prints an Explanation sees its summary, not every array."""
    net = TinyCNN().eval()
    exp = uv.explain(net, torch.rand(9, 1, 16, 16), method="integrated_gradients", target=1)
    text = repr(exp)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("Explanation(method='integrated_gradients', values=9x1x16x16, targets=[1, 1")
    assert f"n_evals={exp.n_evals}" in text and "max|delta|=" in text
