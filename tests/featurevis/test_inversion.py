"""Feature inversion (Mahendran & Vedaldi 2015) on the digits zoo CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unveil.errors import InputError, LayerNotFoundError, OptionError
from unveil.featurevis import invert
from unveil.featurevis import objectives as O


@pytest.fixture(scope="module")
def digits():
    from unveil.zoo import digits_cnn, load_dataset

    return digits_cnn(), load_dataset("digits_cnn").X_test[:6]


def _rep(model, layer, x):
    store = []
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.append(o))
    try:
        with torch.no_grad():
            model(torch.as_tensor(x))
    finally:
        h.remove()
    return store[0]


@pytest.mark.parametrize("layer", ["features.4", "features.7"])
def test_error_falls_below_a_tenth_and_is_reported_honestly(digits, layer):
    model, x = digits
    inv = invert(model, x, layer=layer, n_steps=150, seed=0)
    assert float(inv.initial_error.min()) > 0.2  # the start is far from the target
    assert bool((inv.error < 0.1 * inv.initial_error).all()), inv.error / inv.initial_error
    # the reported error is the relative representation error of the returned images
    target, got = _rep(model, layer, x), _rep(model, layer, inv.images)
    rel = ((got - target).flatten(1).pow(2).sum(1) / target.flatten(1).pow(2).sum(1)).numpy()
    np.testing.assert_allclose(inv.error, rel, rtol=1e-3, atol=1e-6)
    lo, hi = float(x.min()), float(x.max())
    assert inv.images.min() >= lo and inv.images.max() <= hi  # default bounds: the data range
    assert inv.trace.shape == (150,) and inv.trace[-1] < inv.trace[0]


def test_reconstructions_of_an_early_layer_resemble_the_originals(digits):
    model, x = digits
    inv = invert(model, x, layer="features.1", n_steps=150, seed=0)
    rec, orig = inv.images.reshape(len(x), -1), x.reshape(len(x), -1).numpy()
    corr = [np.corrcoef(r, o)[0, 1] for r, o in zip(rec, orig)]
    assert min(corr) > 0.8, corr
    # and more than the noise start resembled them
    start = invert(model, x, layer="features.1", n_steps=1, lr=1e-9, seed=0).images.reshape(len(x), -1)
    assert max(np.corrcoef(s, o)[0, 1] for s, o in zip(start, orig)) < 0.5


def test_priors_pull_in_their_direction(digits):
    model, x = digits
    weak = invert(model, x[:2], layer="features.7", n_steps=60, tv=0.0, alpha_weight=0.0, seed=1)
    strong = invert(model, x[:2], layer="features.7", n_steps=60, tv=50.0, alpha_weight=0.0, seed=1)
    tv = O.total_variation(2.0)
    t_weak = float(tv({"input": torch.as_tensor(weak.images)}).mean())
    t_strong = float(tv({"input": torch.as_tensor(strong.images)}).mean())
    assert t_strong < 0.5 * t_weak
    assert float(strong.error.mean()) > float(weak.error.mean())  # a real trade-off
    same = invert(model, x[:2], layer="features.7", n_steps=60, tv=0.0, alpha_weight=0.0, seed=1)
    np.testing.assert_array_equal(same.images, weak.images)  # deterministic under seed


def test_tabular_inversion():
    from unveil.zoo import breast_cancer_mlp, load_dataset

    model, data = breast_cancer_mlp(), load_dataset("breast_cancer_mlp")
    lo, hi = data.X_train.min(0).values, data.X_train.max(0).values
    inv = invert(model, data.X_test[:4], layer="features.1", bounds=(lo, hi), n_steps=200, seed=0)
    assert bool((inv.error < 0.1 * inv.initial_error).all())
    x = torch.as_tensor(inv.images)
    assert bool((x >= lo).all()) and bool((x <= hi).all())


def test_errors(digits):
    model, x = digits
    with pytest.raises(LayerNotFoundError, match="no layer 'features.99'"):
        invert(model, x, layer="features.99", n_steps=1)
    with pytest.raises(OptionError, match="steps must be"):
        invert(model, x, layer="features.1", steps=-3)
    with pytest.raises(OptionError, match="init must be"):
        invert(model, x, layer="features.1", init="zeros")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="does not broadcast to the inputs"):
        invert(model, x, layer="features.1", init=torch.zeros(5, 5))
    with pytest.raises(OptionError, match="per-step transforms need images"):
        invert(torch.nn.Linear(3, 2), torch.zeros(2, 3), layer="", transforms=[])
    with pytest.raises(InputError, match="NaN"):
        invert(model, torch.full((1, 1, 32, 32), float("nan")), layer="features.1")
    with pytest.raises(OptionError, match="reconstructs float inputs"):
        emb = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Flatten(), torch.nn.Linear(6, 1))
        invert(emb, torch.tensor([[1, 2]]), layer="0")
