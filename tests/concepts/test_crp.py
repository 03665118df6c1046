"""Concept relevance propagation: completeness over channels, agreement with zennit-crp 0.6.0,
top concepts, reference examples, bad input, and the model left as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from unveil.attribution.lrp import preset
from unveil.concepts import (
    ConceptRelevance,
    concept_references,
    conditional_relevance,
    load_concept_relevance,
    top_concepts,
)
from unveil.errors import LayerNotFoundError, OptionError
from unveil.featurevis import dataset_examples


def cnn(bn: bool = False) -> nn.Sequential:
    """A small VGG-like CNN: conv, (BN), ReLU, max and average pooling, two dense layers."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(8, eps=1e-12))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
               nn.Flatten(), nn.Linear(12 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5)]
    m = nn.Sequential(*layers)
    if bn:
        bnm = m[1]
        assert isinstance(bnm, nn.BatchNorm2d)
        with torch.no_grad():
            bnm.running_mean.uniform_(-0.5, 0.5)
            bnm.running_var.uniform_(0.5, 2.0)
            bnm.weight.uniform_(0.5, 1.5)
            bnm.bias.uniform_(-0.2, 0.2)
    return m.double().eval()


def rows(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon", "epsilon_alpha2_beta1"])
@pytest.mark.parametrize(("bn", "layer"), [(False, "3"), (False, "0"), (True, "5"), (False, "7")])
def test_conditional_relevance_over_all_channels_sums_to_plain_lrp(composite: str, bn: bool, layer: str) -> None:
    model, x = cnn(bn), rows()
    res = conditional_relevance(model, x, layer=layer, composite=composite)
    plain = uv.explain(model, x, method="lrp", composite=composite)
    assert res.heatmaps.shape[:2] == (3, res.channel_relevance.shape[1])
    total = res.heatmaps.sum(axis=1)
    assert np.abs(plain.values).max() > 1e-6
    assert np.abs(total - plain.values).max() <= 1e-10 * np.abs(plain.values).max()
    # each concept's share is a real part: no single channel carries the whole map
    assert np.abs(res.heatmaps).reshape(3, res.heatmaps.shape[1], -1).sum(2).max() < np.abs(total).reshape(3, -1).sum(1).max() * 10


def test_channel_relevance_sums_to_the_relevance_reaching_the_layer() -> None:
    """With the ε-rule on a bias-free net and no absorption above the layer, the relevance of all
    channels at a layer sums to the explained logit (conservation)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 16 * 16, 4, bias=False)).double().eval()
    x = rows()
    comp = preset("epsilon", epsilon=1e-12)  # the ε of the dense layer's denominator absorbs ~ε
    res = conditional_relevance(model, x, layer="1", concepts=[0], composite=comp)
    np.testing.assert_allclose(res.channel_relevance.sum(1), res.scores, rtol=1e-9)


def zennit_crp(model: nn.Module, x: torch.Tensor, conditions: list[dict], record: list[str] | None = None):
    from crp.attribution import CondAttribution
    from zennit.composites import EpsilonPlusFlat

    att = CondAttribution(model, no_param_grad=False)
    xr = x.clone().requires_grad_(True)
    return att(xr, conditions, EpsilonPlusFlat(), record_layer=record or [])


@pytest.mark.usefixtures("torchvision_stub")
@pytest.mark.parametrize("layer", ["3", "0", "7"])
def test_agrees_with_zennit_crp(layer: str) -> None:
    model, x = cnn(), rows(2)
    chans = [[0], [1, 2], [3], [0, 4, 5]]
    ours = conditional_relevance(model, x, layer=layer, concepts=chans)
    requires = [p.requires_grad for p in model.parameters()]
    for i in range(2):
        y = int(ours.targets[i])
        conds = [{layer: c, "y": [y]} for c in chans]
        ref = zennit_crp(model, x[i:i + 1], conds)
        mine = ours.heatmaps[i].sum(axis=1)  # zennit-crp sums the colour channels
        assert np.abs(ref.heatmap.numpy()).max() > 1e-8
        assert rel_err(mine, ref.heatmap.numpy()) <= 1e-5
        # the relevance of each channel at the layer, recorded by zennit-crp without a mask
        # (with a mask and exclude_parallel=True it records the masked relevance twice over)
        rec = zennit_crp(model, x[i:i + 1], [{"y": [y]}], record=[layer]).relevances[layer][0]
        per_channel = rec.flatten(1).sum(1) if rec.ndim > 1 else rec
        assert rel_err(ours.channel_relevance[i], per_channel.numpy()) <= 1e-5
    assert [p.requires_grad for p in model.parameters()] == requires


@pytest.mark.usefixtures("torchvision_stub")
def test_top_concepts_agree_with_zennit_crp_ranking() -> None:
    from crp.concepts import ChannelConcept

    model, x = cnn(), rows(2, seed=3)
    ours = top_concepts(model, x, layer="3", k=4)
    for i in range(2):
        ref = zennit_crp(model, x[i:i + 1], [{"y": [int(ours.targets[i])]}], record=["3"])
        share = ChannelConcept().attribute(ref.relevances["3"], abs_norm=True)[0]
        want = torch.argsort(share, descending=True)[:4].tolist()
        assert [c[0] for c in ours.concepts[i]] == want
        np.testing.assert_allclose(ours.share[i], share.numpy(), rtol=1e-6, atol=1e-12)


def test_top_concepts_heat_maps_are_the_conditional_ones() -> None:
    model, x = cnn(), rows(3)
    top = top_concepts(model, x, layer="3", k=3)
    assert top.heatmaps.shape[:2] == (3, 3)
    for i in range(3):
        chans = [c[0] for c in top.concepts[i]]
        assert chans == [c for c, _ in top.top(i, 3)]
        one = conditional_relevance(model, x[i:i + 1], layer="3", concepts=chans)
        np.testing.assert_allclose(top.heatmaps[i], one.heatmaps[0], rtol=1e-9, atol=1e-14)
        # the concept's relevance at the layer is what its conditional map puts at the input,
        # up to what the rules below the layer absorb (z⁺ and flat): same sign ordering
        assert top.channel_relevance[i, chans[0]] >= top.channel_relevance[i, chans[-1]]


def test_references_by_relevance_and_activation() -> None:
    model = cnn()
    data = rows(20, seed=5)
    refs = concept_references(model, data, layer="3", concepts=[2, [0, 1]], k=4)
    plain = conditional_relevance(model, data, layer="3", concepts=[0])
    per_row = np.stack([plain.channel_relevance[:, 2], plain.channel_relevance[:, [0, 1]].sum(1)], 1)
    for j, ref in enumerate(refs):
        want = np.argsort(-per_row[:, j], kind="stable")[:4]
        np.testing.assert_array_equal(ref.indices, want)
        np.testing.assert_allclose(ref.values, per_row[want, j], rtol=1e-9)
        assert ref.heatmaps is not None and ref.heatmaps.shape == (4, 3, 16, 16)
        assert ref.patches is not None and all(p.shape[0] == 3 for p in ref.patches)
    act = concept_references(model, data, layer="3", concepts=[2], k=4, mode="activation")[0]
    ex = dataset_examples(model, data, layer="3", unit=2, k=4)
    np.testing.assert_array_equal(act.indices, ex.indices)


def test_bad_input_is_explained() -> None:
    model, x = cnn(), rows(1)
    with pytest.raises(LayerNotFoundError, match="Closest names: 3"):
        conditional_relevance(model, x, layer="33", concepts=[0])
    with pytest.raises(OptionError, match=r"channel 12 is out of range: the layer has 12 channels"):
        conditional_relevance(model, x, layer="3", concepts=[12])
    with pytest.raises(OptionError, match="non-empty list"):
        conditional_relevance(model, x, layer="3", concepts=[[]])
    with pytest.raises(OptionError, match="k must be"):
        top_concepts(model, x, layer="3", k=0)
    with pytest.raises(OptionError, match="mode must be"):
        concept_references(model, x, layer="3", concepts=[0], mode="both")  # type: ignore[arg-type]


class Fails(nn.Module):
    """Raises in the relevance pass (inputs that require gradients), not in a plain forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError("boom")
        return x


def test_model_is_left_unchanged_when_a_pass_fails() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Fails(), nn.Flatten(),
                          nn.Linear(4 * 16 * 16, 3)).double()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"), pytest.warns(UserWarning, match="training mode"):
        conditional_relevance(model, rows(2), layer="1", concepts=[0])
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_save_load_dict_and_html(tmp_path) -> None:
    model = cnn()
    res = top_concepts(model, rows(2), layer="3", k=2, names={0: "stripes"})
    res.with_references(model, rows(10, seed=7), k=3)
    path = res.save(tmp_path / "crp")
    back = load_concept_relevance(path)
    assert isinstance(back, ConceptRelevance)
    np.testing.assert_array_equal(back.heatmaps, res.heatmaps)
    assert back.concepts == res.concepts and back.names == res.names
    assert len(back.references) == len(res.references)
    np.testing.assert_array_equal(back.references[0].inputs, res.references[0].inputs)
    json.dumps(res.to_dict())
    page = res._repr_html_()
    assert "<img" in page and "3:" in page and "http" not in page.replace("http://www.w3.org", "")


class Residual(nn.Module):
    """stem conv-ReLU, a residual block (conv-ReLU-conv plus the identity), ReLU, pooling, dense."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.relu0 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv1, self.relu1, self.conv2 = nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1)
        self.relu2, self.pool, self.fc = nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu0(self.stem(x))
        y = self.conv2(self.relu1(self.conv1(h)))
        return self.fc(self.pool(self.relu2(y + h)).flatten(1))


def residual_canonizer():
    """For Zennit: the block's addition as a ``Sum`` module, whose Norm rule splits relevance in
    proportion to the summands (what unveil does for additions in ``forward``)."""
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def forward(self, x):
        h = self.relu0(self.stem(x))
        y = self.conv2(self.relu1(self.conv1(h)))
        return self.fc(self.pool(self.relu2(self.canonizer_sum(torch.stack([y, h], dim=-1)))).flatten(1))

    def attribute_map(name, module):
        if isinstance(module, Residual):
            return {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return AttributeCanonizer(attribute_map)


@pytest.mark.usefixtures("torchvision_stub")
@pytest.mark.parametrize("layer", ["conv1", "stem", "conv2"])
def test_residual_model_agrees_with_zennit_crp(layer: str) -> None:
    """Inside the block only the relevance that flows through the layer is a concept's (zennit-crp's
    exclude_parallel, its default); before the block every path passes the layer."""
    from crp.attribution import CondAttribution
    from zennit.composites import EpsilonPlusFlat

    model = Residual().double().eval()
    x = rows(2, seed=4)
    chans = [[0], [1, 2], [5]]
    ours = conditional_relevance(model, x, layer=layer, concepts=chans)
    att = CondAttribution(model, no_param_grad=False)
    for i in range(2):
        xr = x[i:i + 1].clone().requires_grad_(True)
        conds = [{layer: c, "y": [int(ours.targets[i])]} for c in chans]
        ref = att(xr, conds, EpsilonPlusFlat(canonizers=[residual_canonizer()])).heatmap.numpy()
        assert np.abs(ref).max() > 1e-8
        assert rel_err(ours.heatmaps[i].sum(axis=1), ref) <= 1e-5
    full = conditional_relevance(model, x, layer=layer).heatmaps.sum(axis=1)
    plain = uv.explain(model, x, method="lrp", composite="epsilon_plus_flat").values
    if layer == "stem":  # every path passes the stem: its channels add up to plain LRP
        assert np.abs(full - plain).max() <= 1e-10 * np.abs(plain).max()
    else:  # the shortcut carries relevance past the block's layers
        assert np.abs(full - plain).max() > 1e-3 * np.abs(plain).max()


class Tokens(nn.Module):
    """(N, T, 4) rows -> a (N, T, 6) layer of features per token -> mean over tokens -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.act, self.head = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.embed(x)).mean(1))


def test_token_layers_take_the_last_axis_as_channels() -> None:
    model = Tokens().double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    res = conditional_relevance(model, x, layer="embed")
    assert res.channel_relevance.shape == (2, 6) and res.heatmaps.shape == (2, 6, 5, 4)
    plain = uv.explain(model, x, method="lrp", composite="epsilon_plus_flat").values
    assert np.abs(res.heatmaps.sum(1) - plain).max() <= 1e-10 * np.abs(plain).max()
    by_tokens = conditional_relevance(model, x, layer="embed", channel_axis=1)  # tokens as "channels"
    assert by_tokens.channel_relevance.shape == (2, 5)
    np.testing.assert_allclose(by_tokens.heatmaps.sum(1), plain, rtol=1e-9, atol=1e-14)
    with pytest.raises(OptionError, match="channel_axis"):
        conditional_relevance(model, x, layer="embed", channel_axis=3)


@pytest.mark.usefixtures("torchvision_stub")
def test_batch_norm_model_agrees_with_zennit_crp() -> None:
    """Batch norm folded into its convolution on both sides (Zennit's SequentialMergeBatchNorm)."""
    from crp.attribution import CondAttribution
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    model, x = cnn(bn=True), rows(2, seed=6)
    chans = [[0], [3, 7]]
    ours = conditional_relevance(model, x, layer="4", concepts=chans)
    att = CondAttribution(model, no_param_grad=False)
    for i in range(2):
        xr = x[i:i + 1].clone().requires_grad_(True)
        conds = [{"4": c, "y": [int(ours.targets[i])]} for c in chans]
        ref = att(xr, conds, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])).heatmap.numpy()
        assert rel_err(ours.heatmaps[i].sum(axis=1), ref) <= 1e-5
