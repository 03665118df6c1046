"""Feature groups and baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unveil.core import baselines, groups
from unveil.errors import BaselineError, InputError


def test_patches_partition_every_pixel_once() -> None:
    g = groups.patches((3, 10, 12), size=4)
    m = g.masks()
    assert g.n_groups == 3 * 3
    assert torch.equal(m.sum(0), torch.ones(3, 10, 12, dtype=torch.long))
    assert m[0, :, :4, :4].all() and not m[0, :, 4:, :].any()  # spans channels, top-left block


def test_overlapping_patches_and_expand() -> None:
    g = groups.patches((1, 6, 6), size=4, stride=2)
    assert g.n_groups == 4 and g.mask_tensor is not None
    vals = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    e = g.expand(vals)
    assert e[0, 0, 0, 0] == 1 and e[0, 0, 2, 2] == 10 and e[0, 0, 5, 5] == 4


def test_column_groups_and_tokens() -> None:
    g = groups.column_groups({"size": ["a", "c"]}, 4, feature_names=["a", "b", "c", "d"])
    assert g.names == ["size", "b", "d"]
    assert g.labels.tolist() == [[0, 1, 0, 2]]
    with pytest.raises(InputError, match="not in the table"):
        groups.column_groups({"x": ["zz"]}, 2, feature_names=["a", "b"])
    t = groups.tokens(torch.tensor([[101, 7, 8, 102, 0]]), special_ids=(101, 102, 0))
    assert t.labels.tolist() == [[-1, 1, 2, -1, -1]]
    assert t.masks(0).sum().item() == 2


def test_superpixels_cover_image() -> None:
    pytest.importorskip("skimage")
    img = torch.zeros(2, 3, 32, 32)
    img[:, :, :, 16:] = 1.0
    g = groups.superpixels(img, n_segments=4)
    assert g.labels.shape == (2, 3, 32, 32) and (g.labels >= 0).all()
    # the edge between the halves is never inside one segment
    lab = g.labels[0, 0]
    assert not (set(lab[:, :16].unique().tolist()) & set(lab[:, 16:].unique().tolist()))


def test_baselines() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(baselines.make_baseline("zeros", x), torch.zeros_like(x))
    assert torch.allclose(baselines.make_baseline(0.5, x), torch.full_like(x, 0.5))
    b = baselines.make_baseline("blur", x)
    assert b.shape == x.shape and b.std() < x.std()
    torch.testing.assert_close(b.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.05, rtol=0)
    m = baselines.make_baseline("mean", x)
    assert torch.allclose(m[:, :, 0, 0], x.mean(dim=(2, 3)))
    u1 = baselines.make_baseline("uniform", x, seed=3)
    assert torch.equal(u1, baselines.make_baseline("uniform", x, seed=3))
    with pytest.raises(BaselineError, match="cannot be broadcast"):
        baselines.make_baseline(torch.zeros(5, 3), x)
    with pytest.raises(BaselineError, match="unknown baseline 'black'"):
        baselines.make_baseline("black", x)
    with pytest.raises(BaselineError, match=r"background rows have shape \(4,\)"):
        baselines.make_background(np.zeros((3, 4)), torch.zeros(2, 5))
