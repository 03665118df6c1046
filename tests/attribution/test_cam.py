"""Class activation maps: agreement with pytorch-grad-cam, closed forms, token grids, errors."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _cam_models import GapCNN, blob_images, res_cnn, train_tiny_vit
from torch import nn

from _util import Raises, TinyCNN, assert_unchanged, snapshot
from unveil.attribution._cam_layers import find_grid
from unveil.attribution.cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from unveil.core.registry import get_method
from unveil.errors import InputError, LayerNotFoundError, ModelError, OptionError

ALL = [GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, ScoreCAM, AblationCAM, EigenCAM,
       GuidedGradCAM]
# ours -> (pytorch-grad-cam class name, our options to use its conventions)
REFERENCE = {
    GradCAM: ("GradCAM", {}), GradCAMPlusPlus: ("GradCAMPlusPlus", {}),
    XGradCAM: ("XGradCAM", {}), LayerCAM: ("LayerCAM", {}), HiResCAM: ("HiResCAM", {}),
    ScoreCAM: ("ScoreCAM", {"align_corners": True}), AblationCAM: ("AblationCAM", {}),
}


def renorm(a: np.ndarray) -> np.ndarray:
    """Min-max per row without pytorch-grad-cam's 1e-7 (which it applies twice, so its maps
    are affinely off by up to ~1e-7 / max|cam|); constant rows become zeros."""
    flat = a.reshape(len(a), -1).astype(np.float64)
    flat = flat - flat.min(1, keepdims=True)
    hi = flat.max(1, keepdims=True)
    return (flat / np.where(hi > 0, hi, 1)).reshape(a.shape)


def reference_cam(name, model, layer, x, targets, size, reshape=None):
    """pytorch-grad-cam's map for ``layer`` at the layer's resolution ``size`` (h, w)."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pgc, name)(model, [layer], reshape_transform=reshape)
    cam.get_target_width_height = lambda t: (size[1], size[0])  # no resize: layer resolution
    if hasattr(cam, "batch_size"):
        cam.batch_size = 64
    try:
        out = cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        cam.activations_and_grads.release()
    return renorm(out)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small batches on a shared, loaded machine: one thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    from unveil.zoo import digits_cnn, load_dataset

    model = digits_cnn()
    x = load_dataset("digits_cnn").X_test[:6]
    return model, x, model(x).argmax(1)


@pytest.fixture(scope="module")
def resnet():
    model = res_cnn()
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return model, x, model(x).argmax(1)


@pytest.fixture(scope="module")
def vit():
    model = train_tiny_vit()
    x, y, pos = blob_images(64, seed=1)
    assert (model(x).argmax(1) == y).float().mean() > 0.95, "the tiny ViT did not learn its task"
    return model, x, pos


@pytest.mark.parametrize("cls", list(REFERENCE), ids=lambda c: c.__name__)
@pytest.mark.parametrize("net", ["digits", "resnet"])
def test_equals_pytorch_grad_cam(cls, net, digits, resnet, torchvision_stub):
    model, x, pred = digits if net == "digits" else resnet
    layer = "features.7" if net == "digits" else "layer2"
    name, opts = REFERENCE[cls]
    ours = cls(model, layer=layer, **opts)(x, target=pred)
    ref = reference_cam(name, model, model.get_submodule(layer), x, pred,
                        ours.extras["cam_normalized"].shape[1:])
    got = ours.extras["cam_normalized"]
    assert got.std() > 0.05, "trivial maps"
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("net", ["digits", "resnet"])
def test_eigen_cam_equals_pytorch_grad_cam_up_to_sign(net, digits, resnet, torchvision_stub):
    """pytorch-grad-cam leaves the principal component's sign to the SVD routine; unveil makes
    the map correlate positively with the summed activations. Same projection otherwise."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, x, _ = digits if net == "digits" else resnet
    with torch.no_grad():
        if net == "digits":
            acts, layer = model.features(x).numpy(), "features.7"
        else:
            acts, layer = model.layer2(model.layer1(model.stem(x))).numpy(), "layer2"
    proj = get_2d_projection(acts)
    ref = acts.sum(1).reshape(len(x), -1)
    ref = ref - ref.mean(1, keepdims=True)
    sign = np.where((proj.reshape(len(x), -1) * ref).sum(1) < 0, -1.0, 1.0)
    expected = renorm(np.maximum(proj * sign[:, None, None], 0))
    got = EigenCAM(model, layer=layer)(x).extras["cam_normalized"]
    assert got.std() > 0.05
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_values_are_the_upsampled_relu_map(resnet):
    model, x, _ = resnet
    e = GradCAM(model, layer="layer2")(x)
    cam = torch.as_tensor(e.extras["cam"])
    expected = F.interpolate(cam.clamp(min=0)[:, None], size=(16, 16), mode="bilinear",
                             align_corners=False)
    assert e.values.shape == (5, 1, 16, 16)
    assert (cam < 0).any() and (cam > 0).any()
    np.testing.assert_allclose(e.values, expected.numpy(), atol=1e-6)
    assert e.meta["layer"] == "layer2" and e.meta["grid"]["size"] == [8, 8]


def test_gap_head_closed_forms():
    """With A -> global average pool -> linear, the gradient is w_c / (h w) everywhere: HiResCAM
    sums to the score minus the bias, Grad-CAM equals HiResCAM, and Ablation-CAM's weights are
    ``w_c mean(A_c) / y`` (setting a non-negative channel to zero)."""
    torch.manual_seed(0)
    model = GapCNN().eval()
    x = torch.randn(4, 2, 8, 8)
    t = torch.tensor([0, 1, 2, 3])
    hires = HiResCAM(model, layer="features.3")(x, target=t)
    score = model(x).gather(1, t[:, None])[:, 0]
    bias = model.fc.bias[t]
    np.testing.assert_allclose(hires.extras["cam"].sum((1, 2)), (score - bias).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    grad = GradCAM(model, layer="features.3")(x, target=t)
    np.testing.assert_allclose(grad.extras["cam"], hires.extras["cam"], rtol=1e-5, atol=1e-6)
    abl = AblationCAM(model, layer="features.3")(x, target=t)
    with torch.no_grad():
        a = model.features(x)
    w = model.fc.weight[t] * a.mean((2, 3)) / score[:, None]
    expected = (w[:, :, None, None] * a).sum(1)
    np.testing.assert_allclose(abl.extras["cam"], expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert abl.n_evals == 4 + 4 * 8


def test_score_cam_counts_and_convention(resnet):
    model, x, pred = resnet
    e = ScoreCAM(model, layer="layer2", batch_size=7)(x, target=pred)
    assert e.n_evals == 5 + 5 * 16
    e_true = ScoreCAM(model, layer="layer2", align_corners=True)(x, target=pred)
    assert np.abs(e.extras["cam"] - e_true.extras["cam"]).max() > 1e-4 * np.abs(e.extras["cam"]).max()


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_batching_does_not_change_results(cls, resnet):
    model, x, pred = resnet
    x, pred = x[:3], pred[:3]
    a = cls(model, layer="layer2", batch_size=1)(x, target=pred)
    b = cls(model, layer="layer2", batch_size=64)(x, target=pred)
    np.testing.assert_allclose(a.extras["cam"], b.extras["cam"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-4, atol=1e-5)


def test_target_changes_the_map(digits):
    model, x, pred = digits
    a = GradCAM(model, layer="features.7")(x, target=pred).extras["cam"]
    b = GradCAM(model, layer="features.7")(x, target=(pred + 1) % 10).extras["cam"]
    assert np.abs(a - b).max() > 0.1 * np.abs(a).max()


def test_default_layer(digits, resnet):
    model, x, _ = resnet
    e = GradCAM(model)(x)
    assert e.meta == {"layer": "layer2", "layer_default": True,
                      "grid": {"kind": "map", "size": [8, 8], "prefix_tokens": 0}}
    model, x, _ = digits
    # the last module with a spatial output is the classifier's max-pool (4x4), and after it the
    # last ReLU: their Grad-CAM maps are mostly all zero; the last convolution's are not
    assert GradCAM(model)(x).meta["layer"] == "features.6"


def test_guided_grad_cam_is_guided_backprop_times_cam(resnet):
    model, x, pred = resnet
    e = GuidedGradCAM(model, layer="layer2")(x, target=pred)
    # guided backpropagation, independently: ReLU modules pass only positive gradients
    handles = [m.register_full_backward_hook(lambda m, gi, go: (gi[0].clamp(min=0),))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        xg = x.clone().requires_grad_(True)
        model(xg).gather(1, pred[:, None]).sum().backward()
    finally:
        for h in handles:
            h.remove()
    gb = xg.grad
    cam = GradCAM(model, layer="layer2")(x, target=pred).extras["cam_normalized"]
    up = F.interpolate(torch.as_tensor(cam)[:, None], size=(16, 16), mode="bilinear",
                       align_corners=False)
    assert e.values.shape == x.shape
    xp = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(xp).gather(1, pred[:, None]).sum(), xp)
    assert (gb - plain).abs().max() > 0.1 * plain.abs().max()  # guidance matters here
    np.testing.assert_allclose(e.extras["guided_backprop"], gb.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e.values, (gb * up).numpy(), rtol=1e-4, atol=1e-6)
    # the private fallback (used when the guided_backprop method is absent) agrees too
    from unveil.attribution._base import Call
    from unveil.attribution._cam_guided import _private_guided_backprop
    from unveil.core.model import Model

    wrapped = Model(model)
    with wrapped.guard():
        call = Call(wrapped, x, pred, torch.zeros(5), torch.zeros(5, 5), 0)
        fallback = _private_guided_backprop(call, batch_size=2, name="guided_grad_cam")
    np.testing.assert_allclose(fallback.numpy(), gb.numpy(), rtol=1e-4, atol=1e-6)


def test_token_grids():
    assert find_grid((2, 17, 8), 2, (2, 3, 16, 16)).__dict__ == {
        "kind": "tokens", "size": (4, 4), "prefix": 1, "batch_first": True}
    assert find_grid((2, 16, 8), 2, (2, 3, 16, 16)).prefix == 0
    seq_first = find_grid((17, 2, 8), 2, (2, 3, 16, 16))
    assert seq_first.batch_first is False and seq_first.size == (4, 4)
    assert find_grid((2, 1 + 4 + 8, 8), 2, (2, 3, 32, 64)).size == (2, 4)  # aspect ratio 1:2
    assert find_grid((2, 1 + 4 + 196, 8), 2, (2, 3, 224, 224)).__dict__["prefix"] == 5
    assert find_grid((2, 10), 2, (2, 3, 16, 16)) is None
    assert find_grid((2, 8, 1, 1), 2, (2, 3, 16, 16)) is None


def test_vit_default_layer_and_reference(vit, torchvision_stub):
    model, x, _ = vit
    e = GradCAM(model)(x[:8])
    assert e.meta["layer"] == "blocks.1.norm1"  # last norm before the last attention
    assert e.meta["grid"] == {"kind": "tokens", "size": [4, 4], "prefix_tokens": 1}
    assert e.values.shape == (8, 1, 16, 16)

    def reshape(t):  # the hand-written transform pytorch-grad-cam needs
        return t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    pred = model(x[:8]).argmax(1)
    for cls in (GradCAM, LayerCAM, HiResCAM):
        got = cls(model)(x[:8], target=pred).extras["cam_normalized"]
        ref = reference_cam(cls.__name__, model, model.blocks[1].norm1, x[:8], pred, (4, 4),
                            reshape=reshape)
        assert got.std() > 0.05
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_vit_score_cam_points_at_the_evidence(vit):
    """The class is the texture of the one bright patch, wherever it is: masking the input by
    each channel's map finds it (pointing game; chance is 1/16). Gradient CAMs on this ViT's
    token grid do not localise it — a known weakness of gradients through attention."""
    model, x, pos = vit
    cam = torch.as_tensor(ScoreCAM(model)(x).extras["cam"])
    hits = (cam.flatten(1).argmax(1) == pos).float().mean().item()
    assert hits >= 0.9


def test_one_dimensional_signals():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 5, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(3, 2, 20)
    e = HiResCAM(model)(x)
    assert e.meta["layer"] == "3" and e.values.shape == (3, 1, 20)
    score = model(x).gather(1, torch.as_tensor(e.targets)[:, None])[:, 0]
    np.testing.assert_allclose(e.extras["cam"].sum(1), (score - model[6].bias[e.targets]).detach(),
                               rtol=1e-5, atol=1e-5)


# -- errors ---------------------------------------------------------------------------------
def test_errors(resnet):
    model, x, _ = resnet
    with pytest.raises(LayerNotFoundError, match="Closest names: layer2"):
        GradCAM(model, layer="layer22")(x)
    with pytest.raises(OptionError, match="not a spatial map or a token grid"):
        GradCAM(model, layer="fc")(x)
    with pytest.raises(InputError, match=r"images \(N, C, H, W\)"):
        GradCAM(nn.Linear(4, 2).eval())(torch.randn(3, 4))
    with pytest.raises(ModelError, match="needs a torch.nn.Module"):
        GradCAM(lambda t: t.flatten(1)[:, :3])(x)
    with pytest.raises(OptionError, match="'grad_cam' takes no option 'baseline'"):
        GradCAM(model)(x, baseline="zeros")
    with pytest.raises(OptionError, match=r"ablation_value='min' should be float \| 'auto'"):
        AblationCAM(model, ablation_value="min")  # type: ignore[arg-type]  # refused on purpose
    with pytest.raises(OptionError, match=r"(?s)option layer=.* should be str \| Module \| None"):
        GradCAM(model, layer=2)  # type: ignore[arg-type]


def test_layer_not_on_the_path_and_shared_layers():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.unused = nn.Conv2d(1, 2, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            self.unused(x)
            y = self.act(self.act(self.a(x)))  # the same ReLU twice
            return self.fc(y.mean((2, 3)))

    model = Branchy().eval()
    x = torch.randn(2, 1, 6, 6)
    with pytest.raises(ModelError, match="does not depend on layer 'unused'"):
        GradCAM(model, layer="unused")(x)
    with pytest.raises(ModelError, match="runs 2 times"):
        GradCAM(model, layer="act")(x)
    assert GradCAM(model)(x).meta["layer"] == "a"  # the shared ReLU is skipped


# -- the model is left as it was ------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("train", [False, True])
def test_model_unchanged(cls, train):
    torch.manual_seed(0)
    model = TinyCNN(3, 4)
    model.train(train)
    x = torch.randn(3, 3, 16, 16)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "explained in eval mode"
        cls(model, layer="features.4")(x)
    assert_unchanged(model, before)
    model.head.append(Raises())
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cls(model, layer="features.4")(x)
    assert_unchanged(model, before)


def test_registered():
    for cls in ALL:
        info = get_method(cls.name)
        assert info.cls is cls and info.family == "cam" and info.needs_module



def test_save_and_load_keep_maps_and_layer(resnet, tmp_path):
    from unveil.core.explanation import Explanation

    model, x, _ = resnet
    e = LayerCAM(model)(x[:2])
    back = Explanation.load(e.save(tmp_path / "cam.npz"))
    assert back.meta == e.meta
    np.testing.assert_array_equal(back.extras["cam_normalized"], e.extras["cam_normalized"])
    np.testing.assert_array_equal(back.values, e.values)


def test_models_that_need_contiguous_inputs():
    """A forward that flattens a spatial map with ``view`` rejects channels-last activations;
    unveil then runs the model in its contiguous layout."""

    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.fc = nn.Linear(3 * 6 * 6, 2)

        def forward(self, x):
            h = self.conv(x).relu()
            return self.fc(h.view(h.size(0), -1))

    model = ViewNet().eval()
    x = torch.randn(3, 2, 6, 6)
    with pytest.raises(RuntimeError, match="view"):
        model(x.contiguous(memory_format=torch.channels_last))
    for cls in (GradCAM, ScoreCAM, AblationCAM):
        e = cls(model, layer="conv")(x)
        assert np.isfinite(e.values).all() and e.values.shape == (3, 1, 6, 6)
    from unveil.attribution.lrp import LRP

    assert np.isfinite(LRP(model)(x).values).all()


def _zero_maps(model: nn.Module, x: torch.Tensor, **options: Any) -> tuple[str, int]:
    e = GradCAM(model, **options)(x)
    maps = np.asarray(e.values).reshape(x.shape[0], -1)  # the maps a person sees (after ReLU)
    return e.meta["layer"], int((maps.max(1) - maps.min(1) <= 0).sum())


def test_default_layer_gives_informative_maps_on_the_zoo_digits():
    from unveil.zoo import digits_cnn, load_dataset

    model = digits_cnn()
    x = load_dataset("digits_cnn").X_test[:64]
    layer, zeros = _zero_maps(model, x)
    assert zeros <= 3, (layer, zeros)
    # the case is not trivial: the layers after the last convolution give mostly blank maps
    assert _zero_maps(model, x, layer="classifier.0")[1] > 16
    assert _zero_maps(model, x, layer="features.7")[1] > 16


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def test_default_layer_on_a_trained_resnet_with_inplace_relus():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), _Block(16),
                          _Block(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1200]), y[:1200]).backward()
        opt.step()
    model.eval()
    test = x[1200:1264]
    assert (model(test).argmax(1) == y[1200:1264]).float().mean() > 0.8, "the model did not learn"
    layer, zeros = _zero_maps(model, test)
    assert zeros <= 3, (layer, zeros)
