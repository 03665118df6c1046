"""Dataset examples equal a brute-force sort; receptive-field patches are the right crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unveil.errors import InputError, LayerNotFoundError, OptionError
from unveil.featurevis import dataset_examples


@pytest.fixture(scope="module")
def digits():
    from unveil.zoo import digits_cnn, load_dataset

    data = load_dataset("digits_cnn")
    return digits_cnn(), data.X_test, data.y_test


def _acts(model, layer, x):
    store = []
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.append(o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return store[0]


def _brute(values: torch.Tensor, k: int):
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return order.numpy(), values[order].numpy()


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_top_inputs_equal_a_brute_force_sort(digits, reduce):
    model, x, y = digits
    a = _acts(model, "features.3", x)[:, 7].flatten(1)
    score = a.amax(1) if reduce == "max" else a.mean(1)
    want_idx, want_val = _brute(score, 12)
    assert len(np.unique(want_val)) == 12  # no ties: the order is well defined
    # a tensor in uneven chunks, and an iterable of (x, y) batches
    for data, bs in ((x, 37), (x, "auto"), ([(x[i:i + 50], y[i:i + 50]) for i in range(0, len(x), 50)], "auto")):
        ex = dataset_examples(model, data, layer="features.3", unit=7, k=12, reduce=reduce, batch_size=bs)
        np.testing.assert_array_equal(ex.indices, want_idx)
        np.testing.assert_allclose(ex.values, want_val, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ex.inputs, x[want_idx].numpy())
        assert ex.n_seen == len(x)


def test_top_patches_equal_a_brute_force_sort(digits):
    model, x, _ = digits
    a = _acts(model, "features.6", x)[:, 11]  # (N, 8, 8)
    flat = a.flatten(1)
    # one patch per input: each input's best position, ranked
    best, where = flat.max(1)
    idx, val = _brute(best, 8)
    ex = dataset_examples(model, x, layer="features.6", unit=11, k=8, batch_size=64)
    np.testing.assert_array_equal(ex.patch_indices, idx)
    assert ex.patch_values is not None
    np.testing.assert_allclose(ex.patch_values, val, rtol=1e-5)
    np.testing.assert_array_equal(ex.patch_positions, np.stack(np.unravel_index(where[idx].numpy(), (8, 8)), 1))
    # all positions: the top (input, position) pairs overall
    allidx, allval = _brute(flat.reshape(-1), 8)
    ex = dataset_examples(model, x, layer="features.6", unit=11, k=8, batch_size=64, one_patch_per_input=False)
    np.testing.assert_array_equal(ex.patch_indices, allidx // 64)
    assert ex.patch_values is not None
    np.testing.assert_allclose(ex.patch_values, allval, rtol=1e-5)
    np.testing.assert_array_equal(ex.patch_positions, np.stack(np.unravel_index(allidx % 64, (8, 8)), 1))


def test_patches_are_receptive_field_crops(digits):
    model, x, _ = digits
    ex = dataset_examples(model, x, layer="features.3", unit=2, k=10, batch_size=100)
    # conv3 -> pool2 -> conv3 (padding 1): output row y of the 16x16 map sees pooled rows
    # y-1..y+1, conv rows 2y-2..2y+3, input rows 2y-3..2y+4 (8 rows), clipped to the image
    for i in range(10):
        py, px = ex.patch_positions[i]
        want = [max(0, 2 * py - 3), min(32, 2 * py + 5), max(0, 2 * px - 3), min(32, 2 * px + 5)]
        np.testing.assert_array_equal(ex.patch_boxes[i], want)
        y0, y1, x0, x1 = want
        np.testing.assert_array_equal(ex.patches[i], x[ex.patch_indices[i]][:, y0:y1, x0:x1].numpy())
    # one more pool2 + conv3: output row y of the 8x8 map sees input rows 4y-7..4y+10 (18)
    deep = dataset_examples(model, x, layer="features.6", unit=0, k=20, one_patch_per_input=False)
    assert deep.patch_positions is not None and deep.patch_boxes is not None
    for (py, px), box in zip(deep.patch_positions, deep.patch_boxes):
        want = [max(0, 4 * py - 7), min(32, 4 * py + 11), max(0, 4 * px - 7), min(32, 4 * px + 11)]
        np.testing.assert_array_equal(box, want)


def test_receptive_field_with_strides_and_a_shortcut():
    from unveil.featurevis._receptive import receptive_boxes

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 5, stride=2, padding=2)
            self.b = nn.Conv2d(2, 2, 3, padding=1)
            self.short = nn.Conv2d(1, 2, 1, stride=2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))) + self.short(x)

    model = Res()
    with torch.no_grad():
        model.a.weight.mul_(-1)  # negative weights must not hide any path
    boxes = receptive_boxes(model, "b", torch.zeros(1, 1, 20, 20), torch.tensor([[5, 5], [0, 9]]))
    # b (3x3) over a (5x5, stride 2): rows 2*(y-1)-2 .. 2*(y+1)+2
    np.testing.assert_array_equal(boxes[0].numpy(), [6, 15, 6, 15])
    np.testing.assert_array_equal(boxes[1].numpy(), [0, 5, 14, 20])


def test_neurons_and_linear_layers(digits):
    model, x, _ = digits
    a = _acts(model, "features.6", x)[:, 3, 2, 5]
    idx, val = _brute(a, 5)
    ex = dataset_examples(model, x, layer="features.6", unit=(3, 2, 5), k=5)
    np.testing.assert_array_equal(ex.indices, idx)
    np.testing.assert_array_equal(ex.patch_positions, np.tile([2, 5], (5, 1)))
    logits = _acts(model, "classifier.2", x)[:, 4]
    idx, _ = _brute(logits, 6)
    ex = dataset_examples(model, x, layer="classifier.2", unit=4, k=6)
    np.testing.assert_array_equal(ex.indices, idx)
    assert ex.patches is None
    # k larger than the data keeps everything, ordered
    ex = dataset_examples(model, x[:5], layer="classifier.2", unit=4, k=50)
    assert len(ex.indices) == 5


def test_errors(digits):
    model, x, _ = digits
    with pytest.raises(LayerNotFoundError, match="no layer"):
        dataset_examples(model, x, layer="feature.6", unit=0)
    with pytest.raises(OptionError, match="out of range: the layer has 64"):
        dataset_examples(model, x[:4], layer="features.6", unit=64)
    with pytest.raises(OptionError, match="unit must be a channel"):
        dataset_examples(model, x[:4], layer="features.6", unit=(1, 2))
    with pytest.raises(OptionError, match="reduce must be"):
        dataset_examples(model, x, layer="features.6", unit=0, reduce="median")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="k must be"):
        dataset_examples(model, x, layer="features.6", unit=0, k=0)
    with pytest.raises(InputError, match="data yielded no batches"):
        dataset_examples(model, [], layer="features.6", unit=0)
    with pytest.raises(InputError, match="iterable of batches"):
        dataset_examples(model, "images/", layer="features.6", unit=0)
    with pytest.raises(OptionError, match="batch_size must be"):
        dataset_examples(model, x, layer="features.6", unit=0, batch_size=0)


def test_plot(digits):
    import matplotlib

    matplotlib.use("Agg")
    model, x, _ = digits
    ex = dataset_examples(model, x[:30], layer="features.3", unit=1, k=4)
    assert ex.plot().get_title().startswith("top 4")
    assert ex.plot(patches=True) is not None
