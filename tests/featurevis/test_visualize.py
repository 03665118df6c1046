"""Activation maximization on the digits zoo CNN, prototype inputs, determinism and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from unveil.errors import LayerNotFoundError, NotDifferentiableError, OptionError
from unveil.featurevis import objectives as O
from unveil.featurevis import transforms as T
from unveil.featurevis import visualize


@pytest.fixture(scope="module")
def digits():
    from unveil.zoo import digits_cnn, load_dataset

    return digits_cnn(), load_dataset("digits_cnn")


def _layer_acts(model, name, x):
    store = []
    h = model.get_submodule(name).register_forward_hook(lambda m, i, o: store.append(o))
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(x))
    finally:
        h.remove()
    return store[0], out


def test_optimised_inputs_beat_every_test_input_by_one_std(digits):
    model, data = digits
    chans = [0, 21, 42, 63]
    objective = O.channel("features.6", chans)
    vis = visualize(model, objective, shape=(4, 1, 32, 32), n_steps=200, seed=0)
    test_acts, _ = _layer_acts(model, "features.6", data.X_test)
    own, _ = _layer_acts(model, "features.6", vis.images)
    test_means, own_means = test_acts.mean((2, 3)), own.mean((2, 3))
    for i, c in enumerate(chans):
        col = test_means[:, c]
        assert float(col.std()) > 0.05  # a unit that varies over the data: not trivial
        assert float(own_means[i, c]) >= float(col.max() + col.std()), c
    np.testing.assert_allclose(vis.values, own_means[range(4), chans].numpy(), rtol=1e-4, atol=1e-5)
    assert vis.images.min() >= 0.0 and vis.images.max() <= 1.0  # the images' box
    assert vis.trace.shape == (200,) and vis.trace_per_image.shape == (200, 4)
    assert vis.trace[-20:].mean() > vis.trace[:20].mean()


def test_class_logits_and_neurons_beat_the_test_set(digits):
    model, data = digits
    _, test_logits = _layer_acts(model, "features.6", data.X_test)
    # logits are bounded tightly by the [0, 1] box (class 6 only ~1.1 std above the test set
    # with the default transforms), so these are optimised without them
    vis = visualize(model, O.class_logit(range(10)), shape=(10, 1, 32, 32), n_steps=200, seed=1,
                    transforms=None)
    _, own = _layer_acts(model, "features.6", vis.images)
    for k in range(10):
        col = test_logits[:, k]
        assert float(own[k, k]) >= float(col.max() + col.std()), k
    test_acts, _ = _layer_acts(model, "features.6", data.X_test)
    idx = (9, 4, 4)
    vis = visualize(model, O.neuron("features.6", idx), shape=(1, 1, 32, 32), n_steps=100, seed=0)
    own_acts, _ = _layer_acts(model, "features.6", vis.images)
    col = test_acts[(slice(None), *idx)]
    assert float(own_acts[(0, *idx)]) >= float(col.max() + col.std())


def test_deterministic_under_seed_and_early_stop_is_exact(digits):
    model, _ = digits
    obj = O.channel("features.3", [1, 2]) + 0.1 * O.diversity("features.3")
    a = visualize(model, obj, shape=(2, 1, 32, 32), n_steps=12, seed=3)
    b = visualize(model, obj, shape=(2, 1, 32, 32), n_steps=12, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.trace, b.trace)
    c = visualize(model, obj, shape=(2, 1, 32, 32), n_steps=12, seed=4)
    assert not np.allclose(a.images, c.images)
    full = visualize(model, obj, shape=(2, 1, 32, 32), n_steps=12, seed=3, stop_early=False)
    np.testing.assert_allclose(full.images, a.images, atol=1e-6)
    assert full.n_evals == a.n_evals == 2 * 12 + 2  # the steps and the final pass


def test_regularizers_and_diversity_do_their_job(digits):
    model, _ = digits
    base: dict[str, Any] = dict(shape=(3, 1, 32, 32), n_steps=60, seed=0, param="pixel")
    obj = O.channel("features.3", 4)
    plain = visualize(model, obj, **base)
    smooth = visualize(model, obj, tv=2.0, **base)
    tv = O.total_variation()
    tv_of = lambda v: tv({"input": torch.as_tensor(v.images)}).mean()  # noqa: E731
    assert float(tv_of(smooth)) < 0.7 * float(tv_of(plain))
    sparse = visualize(model, obj, l1=2.0, **base)
    assert np.abs(sparse.images - 0.5).mean() < 0.7 * np.abs(plain.images - 0.5).mean()
    sim = lambda v: -O.diversity("features.3")(  # noqa: E731
        {"features.3": _layer_acts(model, "features.3", v.images)[0]}).mean()
    diverse = visualize(model, obj + 5.0 * O.diversity("features.3"), **base)
    assert float(sim(diverse)) < float(sim(plain)) - 0.02


def test_prototype_inputs_stay_in_the_box():
    from unveil.zoo import breast_cancer_mlp, load_dataset

    model, data = breast_cancer_mlp(), load_dataset("breast_cancer_mlp")
    lo, hi = data.X_train.min(0).values, data.X_train.max(0).values
    obj = O.class_logit([0, 1]) - O.class_logit([1, 0])  # each row's margin for its class
    vis = visualize(model, obj, shape=(2, 30), n_steps=150, bounds=(lo, hi), seed=0)
    x = torch.as_tensor(vis.images)
    assert bool((x >= lo).all()) and bool((x <= hi).all())
    with torch.no_grad():
        margins = model(data.X_test) @ torch.tensor([1.0, -1.0])
        own = model(x) @ torch.tensor([1.0, -1.0])
    assert float(own[0]) >= float(margins.max() + margins.std())
    assert float(-own[1]) >= float((-margins).max() + margins.std())


def test_errors(digits):
    model, _ = digits
    obj = O.channel("features.3", 0)
    with pytest.raises(OptionError, match="leading batch axis"):
        visualize(model, obj, shape=(32,))
    with pytest.raises(OptionError, match="steps must be a whole number"):
        visualize(model, obj, shape=(1, 1, 32, 32), n_steps=0)
    with pytest.raises(OptionError, match="lr must be a finite number > 0"):
        visualize(model, obj, shape=(1, 1, 32, 32), lr=-1.0)
    with pytest.raises(OptionError, match="tv must be a finite number >= 0"):
        visualize(model, obj, shape=(1, 1, 32, 32), tv=float("nan"))
    with pytest.raises(OptionError, match="needs \\(N, 3, H, W\\)"):
        visualize(model, obj, shape=(1, 1, 32, 32), decorrelate=True)
    with pytest.raises(LayerNotFoundError, match="Closest names: features.3"):
        visualize(model, O.channel("features.33", 0), shape=(1, 1, 32, 32), n_steps=1)
    with pytest.raises(OptionError, match="gives 3 values, one per image, but the batch has 2"):
        visualize(model, O.channel("features.3", [0, 1, 2]), shape=(2, 1, 32, 32), n_steps=1)
    with pytest.raises(OptionError, match="must be callables"):
        visualize(model, obj, shape=(1, 1, 32, 32), transforms=[T.jitter(1), "rotate"])  # type: ignore[list-item]  # deliberately wrong
    with pytest.raises(OptionError, match="'layer:channel'"):
        visualize(model, 3, shape=(1, 1, 32, 32))  # type: ignore[arg-type]
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(OptionError, match="pass bounds=\\(low, high\\)"):
        visualize(mlp, O.class_logit(0), shape=(1, 4))
    with pytest.raises(OptionError, match="does not broadcast"):
        visualize(mlp, O.class_logit(0), shape=(1, 4), bounds=(torch.zeros(3), 1.0))
    with pytest.raises(OptionError, match="low < high"):
        visualize(mlp, O.class_logit(0), shape=(1, 4), bounds=(1.0, 0.0))
    with pytest.raises(OptionError, match="param='fourier' needs images"):
        visualize(mlp, O.class_logit(0), shape=(1, 4), bounds=(0, 1), param="fourier")
    with pytest.raises(OptionError, match="transforms='standard' needs images"):
        visualize(mlp, O.class_logit(0), shape=(1, 4), bounds=(0, 1), transforms="standard")

    def numpy_model(x):
        return np.asarray(x).sum(1, keepdims=True)

    with pytest.raises(NotDifferentiableError, match="needs gradients"):
        visualize(numpy_model, O.class_logit(0), shape=(1, 4), bounds=(0, 1))


def test_plot_returns_axes(digits):
    import matplotlib

    matplotlib.use("Agg")
    model, _ = digits
    vis = visualize(model, "features.3:2", shape=(2, 1, 32, 32), n_steps=2)
    ax = vis.plot()
    assert ax.get_title().startswith("channel")
