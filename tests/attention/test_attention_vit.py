"""Vision transformers: token values mapped onto patches; a tiny ViT with a known decisive patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unveil as uv
from unveil.attention import attention, capture_attentions, tokens_to_image
from unveil.attention.vit import make_patch_task, train_tiny_vit
from unveil.errors import InputError


def test_tokens_to_image_places_each_patch():
    tokens = torch.arange(1 + 2 * 3, dtype=torch.float32).unsqueeze(0)  # [CLS] + 2x3 patches
    patch_map, pixels = tokens_to_image(tokens, (4, 7), prefix_tokens=1)
    torch.testing.assert_close(patch_map[0], torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert pixels.shape == (1, 1, 4, 7)
    assert pixels[0, 0, 0, 0] == 1 and pixels[0, 0, 1, 1] == 1  # 2x2 pixels per patch
    assert pixels[0, 0, 3, 5] == 6
    assert (pixels[0, 0, :, 6] == 0).all()  # 7 = 3 * 2 + 1: the last column is outside the grid


def test_tokens_to_image_errors():
    with pytest.raises(InputError, match="do not form a patch grid"):
        tokens_to_image(torch.zeros(1, 8), (4, 4), prefix_tokens=1)
    with pytest.raises(InputError, match="do not form a patch grid"):
        tokens_to_image(torch.zeros(1, 1), (4, 4), prefix_tokens=1)


@pytest.fixture(scope="module")
def vit():
    model = train_tiny_vit(make_patch_task(2000, seed=0), seed=0)
    test = make_patch_task(300, seed=1)
    keep = test.where >= 0
    return model, test, test.X[keep], test.where[keep]


def test_tiny_vit_learned_the_task(vit):
    model, test, _, _ = vit
    with torch.no_grad():
        assert float((model(test.X).argmax(1) == test.y).float().mean()) >= 0.95


@pytest.mark.parametrize("method", ["attention_rollout", "grad_attention_rollout"])
def test_rollout_finds_the_decisive_patch(vit, method, record_property):
    model, _, x, where = vit
    exp = attention(model, x, method=method)
    assert exp.values.shape == (x.shape[0], 1, 16, 16) and exp.modality == "image"
    patch_map = exp.extras["patch_map"]
    assert patch_map.shape == (x.shape[0], 4, 4)
    np.testing.assert_allclose(patch_map.reshape(len(x), -1), exp.extras["tokens"][:, 1:])
    rate = float((torch.as_tensor(patch_map).flatten(1).argmax(1) == where).float().mean())
    record_property(f"vit_{method}_top1", rate)
    assert rate >= 0.9, f"{method} puts the bar's patch first on {rate:.1%} (chance 1/16)"
    # each pixel carries its patch's value
    i, w = 0, int(where[0])
    r, c = (w // 4) * 4, (w % 4) * 4
    assert np.all(exp.values[i, 0, r : r + 4, c : c + 4] == patch_map[i, w // 4, w % 4])


@pytest.mark.parametrize("method", ["attention_raw", "attention_flow"])
def test_other_methods_on_images_beat_chance(vit, method, record_property):
    model, _, x, where = vit
    exp = uv.explain(model, x[:60], method=method)
    rate = float((torch.as_tensor(exp.extras["patch_map"]).flatten(1).argmax(1) == where[:60])
                 .float().mean())
    record_property(f"vit_{method}_top1", rate)
    assert rate > 1 / 16 + 3 * np.sqrt(1 / 16 * 15 / 16 / 60)


def test_hugging_face_vit_capture_and_rollout():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(cfg).eval()
    impl = model.config._attn_implementation
    x = torch.randn(3, 1, 8, 8)
    maps = capture_attentions(model, x)
    assert model.config._attn_implementation == impl
    model.set_attn_implementation("eager")
    ref = model(pixel_values=x, output_attentions=True).attentions
    model.set_attn_implementation(impl)
    torch.testing.assert_close(maps.probs, torch.stack(ref, 1))
    exp = attention(model, x, method="attention_rollout")
    assert exp.values.shape == (3, 1, 8, 8) and exp.extras["patch_map"].shape == (3, 2, 2)
