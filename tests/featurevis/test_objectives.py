"""Objectives: closed forms on hand-made activations, the algebra, per-image indices, errors."""

from __future__ import annotations

import pytest
import torch

from unveil.errors import OptionError
from unveil.featurevis import objectives as O


@pytest.fixture
def acts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv": torch.randn(3, 4, 5, 6, generator=g),
        "fc": torch.randn(3, 7, generator=g),
        "output": torch.randn(3, 10, generator=g),
        "input": torch.rand(3, 2, 8, 8, generator=g),
    }


def test_channel_neuron_layer_class_closed_forms(acts):
    a = acts["conv"]
    torch.testing.assert_close(O.channel("conv", 2)(acts), a[:, 2].mean((1, 2)))
    torch.testing.assert_close(O.channel("fc", 5)(acts), acts["fc"][:, 5])
    # an int neuron is the channel at the centre position; a tuple indexes exactly
    torch.testing.assert_close(O.neuron("conv", 1)(acts), a[:, 1, 2, 3])
    torch.testing.assert_close(O.neuron("conv", (3, 4, 0))(acts), a[:, 3, 4, 0])
    torch.testing.assert_close(O.neuron("fc", (6,))(acts), acts["fc"][:, 6])
    torch.testing.assert_close(O.layer("conv")(acts), a.pow(2).flatten(1).mean(1))
    torch.testing.assert_close(O.class_logit(7)(acts), acts["output"][:, 7])
    assert O.class_logit(7).needs_output and not O.channel("conv", 0).needs_output


def test_per_image_indices(acts):
    a = acts["conv"]
    got = O.channel("conv", [0, 3, 1])(acts)
    want = torch.stack([a[0, 0].mean(), a[1, 3].mean(), a[2, 1].mean()])
    torch.testing.assert_close(got, want)
    got = O.neuron("conv", [(0, 0, 0), (1, 4, 5), 2])(acts)
    torch.testing.assert_close(got, torch.stack([a[0, 0, 0, 0], a[1, 1, 4, 5], a[2, 2, 2, 3]]))
    torch.testing.assert_close(O.class_logit(range(3))(acts), acts["output"].diagonal()[:3])
    objs = [O.channel("conv", 1), O.class_logit(4), O.neuron("fc", 2)]
    got = O.per_image(objs)(acts)
    torch.testing.assert_close(got, torch.stack([a[0, 1].mean(), acts["output"][1, 4], acts["fc"][2, 2]]))
    assert O.per_image(objs).layers == {"conv", "output", "fc"}


def test_direction_is_a_projection(acts):
    a = acts["conv"]
    v = torch.tensor([1.0, -2.0, 0.5, 3.0])
    want = (a * (v / v.norm()).view(1, 4, 1, 1)).sum(1).flatten(1).mean(1)
    torch.testing.assert_close(O.direction("conv", v)(acts), want)
    # along one channel's axis it is that channel's mean
    e = torch.zeros(4)
    e[2] = 5.0
    torch.testing.assert_close(O.direction("conv", e)(acts), O.channel("conv", 2)(acts))
    # a full per-sample direction, and cosine similarity of an activation with itself is 1
    full = a[1]
    cos = O.direction("conv", full, cosine=True)(acts)
    assert abs(float(cos[1]) - 1.0) < 1e-5 and float(cos[0]) < 0.9
    per = O.direction("fc", acts["fc"], cosine=True)(acts)
    torch.testing.assert_close(per, torch.ones(3))


def test_diversity_closed_forms():
    same = {"conv": torch.ones(2, 3, 4, 4)}
    torch.testing.assert_close(O.diversity("conv")(same), -torch.ones(2))
    # disjoint channels active -> orthogonal Gram matrices -> zero similarity
    a = torch.zeros(2, 2, 3, 3)
    a[0, 0] = 1.0
    a[1, 1] = 1.0
    torch.testing.assert_close(O.diversity("conv")({"conv": a}), torch.zeros(2))
    torch.testing.assert_close(O.diversity("conv")({"conv": torch.ones(1, 2, 3, 3)}), torch.zeros(1))


def test_algebra(acts):
    c, n = O.channel("conv", 0), O.neuron("fc", 1)
    vc, vn = c(acts), n(acts)
    torch.testing.assert_close((c + n)(acts), vc + vn)
    torch.testing.assert_close((c - 2 * n)(acts), vc - 2 * vn)
    torch.testing.assert_close((-c + 1.5)(acts), -vc + 1.5)
    torch.testing.assert_close((3 - c)(acts), 3 - vc)
    torch.testing.assert_close((c / 4)(acts), vc / 4)
    torch.testing.assert_close((0.5 * c * 2)(acts), vc)
    assert (c + n).layers == {"conv", "fc"}
    assert "channel" in repr(c + n) and "neuron" in repr(c + n)
    with pytest.raises(TypeError, match="only with numbers"):
        c * n  # noqa: B018
    with pytest.raises(OptionError, match="divide an objective by zero"):
        c / 0
    assert O.as_objective("conv:3").name == O.channel("conv", 3).name
    with pytest.raises(OptionError, match="'layer:channel'"):
        O.as_objective("conv")


def test_priors_closed_forms(acts):
    x = acts["input"]
    torch.testing.assert_close(O.l1(0.5)(acts), (x - 0.5).abs().flatten(1).mean(1))
    torch.testing.assert_close(O.input_norm(6.0)(acts), x.pow(6).flatten(1).mean(1))
    dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    torch.testing.assert_close(O.total_variation(2.0)(acts), (dx**2 + dy**2).flatten(1).mean(1))
    assert float(O.total_variation()({"input": torch.ones(1, 1, 5, 5)})[0]) < 1e-3
    flat = {"input": torch.full((1, 3, 9, 9), 0.3)}
    assert float(O.blur(1.0)(flat)[0]) < 1e-10 and float(O.blur(1.0)(acts)[0]) > 1e-4


def test_errors(acts):
    with pytest.raises(OptionError, match="out of range"):
        O.channel("conv", 9)(acts)
    with pytest.raises(OptionError, match="one per image, but the batch has 3"):
        O.channel("conv", [0, 1])(acts)
    with pytest.raises(OptionError, match="int or a sequence of ints"):
        O.channel("conv", 1.5)(acts)  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(OptionError, match="neuron index .* has 2 entries"):
        O.neuron("conv", (1, 2))(acts)
    with pytest.raises(OptionError, match="out of range for an activation"):
        O.neuron("conv", (1, 9, 0))(acts)
    with pytest.raises(OptionError, match="does not fit"):
        O.direction("conv", torch.ones(5))(acts)
    with pytest.raises(OptionError, match="finite float"):
        O.direction("conv", [1, 2, 3, 4])
    with pytest.raises(OptionError, match="per_image got 2 objectives for a batch of 3"):
        O.per_image([O.channel("conv", 0), O.channel("conv", 1)])(acts)
    with pytest.raises(OptionError, match="needs spatial inputs"):
        O.total_variation()({"input": torch.ones(2, 5)})
    with pytest.raises(OptionError, match="beta must be positive"):
        O.total_variation(0.0)
    with pytest.raises(OptionError, match="alpha must be positive"):
        O.input_norm(-1.0)
