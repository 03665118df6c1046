"""Concept discovery: the planted corner mark is found and ranked first for its class; the NMF,
the Sobol estimator and the SAE path; bad input; the model left as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from unveil.concepts import ConceptDiscovery, discover_concepts, load_concept_discovery
from unveil.concepts.discovery import _sobol_designs, _sobol_total, nmf, nnls_codes
from unveil.errors import InputError, LayerNotFoundError, OptionError
from unveil.language.sae import train_sae
from unveil.zoo import load_dataset
from unveil.zoo.marked_digits import (
    MARK_OFFSET,
    MARK_SIZE,
    MARKED_CLASS,
    marked_digits_cnn,
    marked_digits_data,
)


@pytest.fixture(scope="module")
def marked() -> ConceptDiscovery:
    model = marked_digits_cnn()
    data = marked_digits_data()
    sevens = data.X_test[data.y_test == MARKED_CLASS]
    return discover_concepts(model, sevens, layer="classifier.0", n_concepts=8, target=MARKED_CLASS,
                             n_designs=16, k=8, seed=0)


def test_discovery_finds_the_planted_mark_and_ranks_it_first(marked: ConceptDiscovery) -> None:
    res = marked
    best = int(np.argmax(res.importance))
    # its top patches are mark patches: each is the top-left position of its image, and its
    # receptive field holds the whole mark
    assert res.patch_positions is not None and res.patch_boxes is not None
    assert (res.patch_positions[best] == 0).all()
    end = MARK_OFFSET + MARK_SIZE
    boxes = res.patch_boxes[best]
    assert ((boxes[:, 0] <= MARK_OFFSET) & (boxes[:, 1] >= end) & (boxes[:, 2] <= MARK_OFFSET)
            & (boxes[:, 3] >= end)).all()
    # and no other concept's top patches are all at the mark
    others = [j for j in range(res.n_concepts) if j != best]
    assert not any((res.patch_positions[j] == 0).all() for j in others)
    # it clearly leads: its total-order index exceeds every other concept's by a margin
    assert res.importance[best] > 1.5 * np.sort(res.importance)[-2]
    assert res.fidelity > 0.95 and res.explained_variance > 0.5


def test_the_mark_concept_is_the_mark(marked: ConceptDiscovery) -> None:
    """Applied to the same sevens without the mark, the concept all but vanishes; the others stay."""
    model = marked_digits_cnn()
    plain = load_dataset("digits_cnn")
    unmarked = plain.X_test[plain.y_test == MARKED_CLASS]
    data = marked_digits_data()
    sevens = data.X_test[data.y_test == MARKED_CLASS]
    best = int(np.argmax(marked.importance))
    with_mark = marked.concept_scores(model, sevens).mean(0)
    without = marked.concept_scores(model, unmarked).mean(0)
    np.testing.assert_allclose(with_mark, marked.row_scores.mean(0), rtol=0.05)
    rest = [j for j in range(marked.n_concepts) if j != best]
    assert without[best] < 0.5 * with_mark[best]  # the largest code, over all positions, drops
    assert (without[rest] > 0.8 * with_mark[rest]).all()  # the digit's own concepts stay


def test_sobol_total_indices_of_a_known_function() -> None:
    """f(m) = 3 m0 + m1 (+ 0 m2) with independent uniform m: S_T = (9, 1, 0) / 10."""
    d = _sobol_designs(3, 1024, 0, torch.float64)
    f = 3 * d[:, 0] + d[:, 1]
    st = _sobol_total(f, 3, 1024)
    np.testing.assert_allclose(st.numpy(), [0.9, 0.1, 0.0], atol=0.03)
    g = d[:, 0] * d[:, 1]  # a pure interaction: both indices equal
    st = _sobol_total(g, 3, 1024)
    assert abs(float(st[0] - st[1])) < 0.03 and float(st[2]) == 0.0


def test_nmf_recovers_a_low_rank_non_negative_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    u, w = torch.rand(300, 3, generator=g, dtype=torch.float64), torch.rand(3, 12, generator=g, dtype=torch.float64)
    a = torch.cat([u @ w, torch.zeros(5, 12, dtype=torch.float64)])  # blank rows get zero codes
    uu, ww = nmf(a, 3, seed=0, steps=2000)
    assert (uu >= 0).all() and (ww >= 0).all()
    assert float((a - uu @ ww).norm() / a.norm()) < 1e-2
    assert (uu[-5:] == 0).all()
    codes = nnls_codes(a, ww, steps=2000)
    assert float((a - codes @ ww).norm() / a.norm()) < 2e-2


class TokenNet(nn.Module):
    """(N, T, 4) -> a (N, T, 6) signed 'residual stream' -> mean over T -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x).mean(1))


def test_sae_path_for_signed_token_activations() -> None:
    model = TokenNet().eval()
    x = torch.randn(20, 5, 4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(InputError, match="method='sae'"):
        discover_concepts(model, x, layer="embed", n_concepts=4)
    res = discover_concepts(model, x, layer="embed", n_concepts=4, method="sae", target=0, sae_steps=300,
                            n_designs=8)
    assert res.components.shape == (4, 6) and res.importance.shape == (4,)
    assert np.isfinite(res.importance).all() and res.patches is None
    acts = model.embed(x).detach()
    sae = train_sae(acts.reshape(-1, 6), n_features=5, steps=200)
    again = discover_concepts(model, x, layer="embed", method="sae", sae=sae, target=0, importance="gradient")
    np.testing.assert_allclose(again.components, sae.W_dec.detach().double().numpy(), rtol=1e-6)
    assert again.n_concepts == 5


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(6 * 8 * 8, 3)).eval()


def test_bad_input_is_explained() -> None:
    model, x = small_cnn(), torch.rand(6, 1, 16, 16)
    with pytest.raises(LayerNotFoundError, match="Closest names: 1"):
        discover_concepts(model, x, layer="11", n_concepts=2)
    with pytest.raises(OptionError, match="n_concepts must be"):
        discover_concepts(model, x, layer="1", n_concepts=0)
    with pytest.raises(OptionError, match="importance must be"):
        discover_concepts(model, x, layer="1", importance="shap")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="non-negative"):
        discover_concepts(model, x - 5, layer="0", n_concepts=2)


class Fails(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 6:  # the Sobol designs run many copies of a row: fail there
            raise RuntimeError("boom")
        return x


def test_model_is_left_unchanged_when_discovery_fails() -> None:
    model = small_cnn()
    model.insert(2, Fails())
    model.train()
    with pytest.raises(RuntimeError, match="boom"), pytest.warns(UserWarning, match="training mode"):
        discover_concepts(model, torch.rand(6, 1, 16, 16), layer="1", n_concepts=2, batch_size=6)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_save_load_dict_and_html(tmp_path) -> None:
    model, x = small_cnn(), torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    res = discover_concepts(model, x, layer="1", n_concepts=3, k=3, n_designs=8, names=["a", "b", "c"])
    back = load_concept_discovery(res.save(tmp_path / "disc"))
    np.testing.assert_array_equal(back.importance, res.importance)
    assert back.names == res.names and back.patches is not None and res.patches is not None
    np.testing.assert_array_equal(back.patches[1][0], res.patches[1][0])
    json.dumps(res.to_dict())
    page = res._repr_html_()
    assert "<img" in page and "importance" in page and ">a" in page
