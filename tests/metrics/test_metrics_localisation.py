"""Localisation, agreement and complexity metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _mutil import Sliding, digits, linear, make_exp, paste

import unveil as uv
from unveil.errors import InputError, LayerNotFoundError, OptionError
from unveil.metrics import (
    agreement,
    boxes_to_masks,
    effective_support,
    pointing_game,
    rank_accuracy,
    rank_agreement,
    relevance_mass,
    sparseness,
    top_k_agreement,
)


def test_digits_pasted_into_a_canvas_are_found() -> None:
    model, xs, ys = digits()
    canvas, boxes = paste(xs[:16], seed=0)
    net = Sliding(model).eval()
    exp = uv.explain(net, canvas, method="saliency", target=ys[:16])
    area = 32 * 32 / 64**2  # what a map blind to the digit scores on average
    assert pointing_game(net, exp, box=boxes).value >= 0.9
    assert relevance_mass(net, exp, box=boxes).value > 0.8
    assert rank_accuracy(net, exp, box=boxes).value > 0.6
    g = torch.Generator().manual_seed(0)
    blind = make_exp(torch.rand(16, 1, 64, 64, generator=g).numpy(), canvas, ys[:16].numpy())
    assert relevance_mass(net, blind, box=boxes).value == pytest.approx(area, abs=0.02)
    assert rank_accuracy(net, blind, box=boxes).value == pytest.approx(area, abs=0.03)


def test_localisation_closed_forms() -> None:
    x = torch.zeros(3, 2, 6, 6)
    box = torch.tensor([[0, 0, 3, 3], [2, 1, 6, 4], [0, 0, 6, 6]])
    m = boxes_to_masks(box, (6, 6))
    assert m.sum().item() == 9 + 12 + 36 and bool(m[1, 1:4, 2:6].all())
    inside = m.float().unsqueeze(1).expand(3, 2, 6, 6) * 0.5  # per channel: sums to 1 per pixel
    exp = make_exp(inside.numpy(), x, None)
    np.testing.assert_allclose(pointing_game(None, exp, box=box).per_sample, 1.0)
    np.testing.assert_allclose(relevance_mass(None, exp, box=box).per_sample, 1.0)
    np.testing.assert_allclose(rank_accuracy(None, exp, box=box).per_sample, 1.0)
    outside = make_exp((1.0 - 2 * inside).numpy(), x, None)
    np.testing.assert_allclose(pointing_game(None, outside, box=box).per_sample[:2], 0.0)
    np.testing.assert_allclose(relevance_mass(None, outside, box=box).per_sample[:2], 0.0)
    # half the mask's pixels at the top, the rest of the top-K outside
    v = torch.zeros(1, 1, 6, 6)
    v[0, 0, 0, :4] = 2.0  # row 0: 3 of these 4 are in the box [0:3, 0:3]
    v[0, 0, 5, :] = 1.0
    half = make_exp(v.numpy(), x[:1, :1], None)
    b = box[:1]
    assert rank_accuracy(None, half, box=b).value == pytest.approx(3 / 9)
    assert relevance_mass(None, half, box=b).value == pytest.approx(6 / 14)
    assert pointing_game(None, half, box=b).value == 1.0  # ties at the top: any hit counts
    empty = relevance_mass(None, half, mask=torch.zeros(1, 6, 6, dtype=torch.bool))
    assert np.isnan(empty.value) and empty.details["n_empty_masks"] == 1


def test_localisation_errors() -> None:
    x = torch.zeros(2, 1, 4, 4)
    exp = make_exp(np.ones((2, 1, 4, 4)), x, None)
    with pytest.raises(InputError, match="exactly one of mask"):
        pointing_game(None, exp)
    with pytest.raises(InputError, match="boxes must be"):
        pointing_game(None, exp, box=[[0, 0, 1]])
    with pytest.raises(InputError, match="do not fit"):
        relevance_mass(None, exp, mask=np.ones((2, 5, 5)))
    with pytest.raises(InputError, match="2 masks for"):
        rank_accuracy(None, exp[:1], mask=np.ones((2, 4, 4)))
    with pytest.raises(InputError, match="box= is for images"):
        rank_accuracy(None, make_exp(np.ones((2, 3)), torch.zeros(2, 3), None), box=[[0, 0, 1, 1]] * 2)


def test_rank_and_top_k_agreement() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 1, 5, 5, generator=g)
    np.testing.assert_allclose(rank_agreement(a, a), 1.0)
    np.testing.assert_allclose(rank_agreement(a, -a, absolute=False), -1.0)
    np.testing.assert_allclose(rank_agreement(a, 3 * a.abs()), 1.0)
    np.testing.assert_allclose(top_k_agreement(a, a, k=5), 1.0)
    model = linear(6, 3)
    x = torch.randn(5, 6)
    sal = uv.explain(model, x, method="saliency", abs=False)
    ig = uv.explain(model, x, method="integrated_gradients")
    # IG of a linear model is x * w, the gradient is w: |ranks| agree exactly where |x| is flat
    r = rank_agreement(sal, make_exp(ig.values / x.numpy(), x, ig.targets))
    np.testing.assert_allclose(r, 1.0, atol=1e-12)


def test_agreement_reexplains_with_other_methods() -> None:
    model = linear(6, 3)
    x = torch.randn(5, 6)
    sal = uv.explain(model, x, method="saliency")
    res = agreement(model, sal)
    assert res.params["methods"][0] == "integrated_gradients"
    ig = uv.explain(model, x, method="integrated_gradients", target=torch.as_tensor(sal.targets))
    ref = rank_agreement(sal, ig).mean()
    assert res.details["integrated_gradients"]["rank_correlation"] == pytest.approx(ref)
    same = agreement(model, sal, methods=["saliency"])
    np.testing.assert_allclose(same.per_sample, 1.0)
    with pytest.raises(OptionError, match="no other registered method"):
        agreement(model, sal, methods=[])


def test_agreement_defaults_come_from_the_registry_and_skip_what_does_not_apply() -> None:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()  # images, but no feature map
    x = torch.rand(2, 1, 8, 8)
    ig = uv.explain(model, x, method="integrated_gradients")
    preferred = sorted((m for m in uv.methods("image") if "image" in m.preferred_for),
                       key=lambda m: m.preferred_for["image"])
    assert [m.name for m in preferred][:2] == ["integrated_gradients", "grad_cam"]  # the premise
    res = agreement(model, ig)
    assert res.params["methods"] == [m.name for m in preferred[2:4]]  # grad_cam passed over
    assert set(res.details) == set(res.params["methods"])
    with pytest.raises(LayerNotFoundError, match="a CAM needs a convolutional feature map"):
        agreement(model, ig, methods=["grad_cam"])  # a named method is not passed over
    with pytest.raises(OptionError, match="Did you mean 'n_steps'"):
        agreement(model, ig, methods=["saliency"], method_options={"integrated_gradients": {"n_step": 4}})


def test_complexity_closed_forms() -> None:
    d = 16
    x = torch.zeros(3, d)
    one_hot = torch.zeros(3, d)
    one_hot[:, 3] = 2.0
    flat = torch.ones(3, d)
    assert sparseness(None, make_exp(one_hot.numpy(), x, None)).value == pytest.approx((d - 1) / d)
    assert sparseness(None, make_exp(flat.numpy(), x, None)).value == pytest.approx(0.0, abs=1e-12)
    assert effective_support(None, make_exp(one_hot.numpy(), x, None)).value == pytest.approx(1 / d)
    assert effective_support(None, make_exp(-flat.numpy(), x, None)).value == pytest.approx(1.0)
    half = torch.cat([torch.ones(1, d // 2), torch.zeros(1, d // 2)], 1)
    res = effective_support(None, make_exp(half.numpy(), x[:1], None))
    assert res.value == pytest.approx(0.5) and res.details["entropy"][0] == pytest.approx(np.log(d / 2))
    assert sparseness(None, make_exp(half.numpy(), x[:1], None)).value == pytest.approx(0.5)
    assert np.isnan(sparseness(None, make_exp(np.zeros((1, d)), x[:1], None)).value)
