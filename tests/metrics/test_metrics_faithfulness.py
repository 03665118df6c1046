"""Faithfulness metrics: deletion/insertion, faithfulness correlation, infidelity,
comprehensiveness/sufficiency, ROAD — closed forms on models whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch
from _mutil import SinglePixel, linear, make_exp
from torch import nn

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, snapshot
from unveil.core.groups import patches
from unveil.errors import InputError, OptionError
from unveil.metrics import (
    comprehensiveness,
    deletion,
    faithfulness_correlation,
    infidelity,
    insertion,
    noisy_linear_imputation,
    road,
    sufficiency,
)

H, W = 5, 6
F = H * W
PIX = (2, 3)


def _ranked(x: torch.Tensor, ranks: list[int], seed: int = 0) -> np.ndarray:
    """Maps (N, 1, H, W) of distinct values in which pixel PIX has the given rank (0 = top)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    pos = PIX[0] * W + PIX[1]
    for r in ranks:
        vals = torch.linspace(1.0, 0.0, F)[torch.randperm(F, generator=g)]
        srt = vals.sort(descending=True).values
        j = int((vals == srt[r]).nonzero()[0, 0])
        vals[j], vals[pos] = vals[pos].clone(), srt[r]
        out.append(vals.view(1, H, W))
    return torch.stack(out).numpy()


@pytest.fixture
def pixel_case() -> tuple[nn.Module, torch.Tensor, list[int], np.ndarray]:
    x = torch.rand(4, 1, H, W) + 0.5  # the read pixel is >= 0.5: the curve's drop is non-trivial
    ranks = [0, 7, 18, F - 1]
    return SinglePixel(*PIX).eval(), x, ranks, _ranked(x, ranks)


def test_deletion_auc_single_pixel_closed_form(pixel_case) -> None:
    model, x, ranks, vals = pixel_case
    exp = make_exp(vals, x, np.zeros(4, dtype=int))
    v = x[:, 0, PIX[0], PIX[1]].double().numpy()
    r = np.array(ranks)
    res = deletion(model, exp, step=1, output="logits")
    np.testing.assert_allclose(res.per_sample, v * (r + 0.5) / F, rtol=1e-6)
    # probabilities: softmax of (v, -v) is sigmoid(2v) at the input, 1/2 once the pixel is gone
    p = 1 / (1 + np.exp(-2 * v))
    res = deletion(model, exp, step=1)
    np.testing.assert_allclose(res.per_sample, p * (r + 0.5) / F + 0.5 * (F - r - 0.5) / F, rtol=1e-6)
    curves = res.details["curves"]
    np.testing.assert_allclose(curves[:, 0], p, rtol=1e-6)  # starts at the unperturbed input
    np.testing.assert_allclose(curves[:, -1], 0.5, rtol=1e-6)  # ends at the baseline
    # coarser steps: 3 pixels a step, 10 steps; the pixel leaves at step floor(r / 3) + 1
    res = deletion(model, exp, n_steps=10, output="logits")
    np.testing.assert_allclose(res.per_sample, v * (r // 3 + 0.5) / 10, rtol=1e-6)
    # least relevant first: the pixel sits at position F - 1 - r
    res = deletion(model, exp, step=1, order="lerf", output="logits")
    np.testing.assert_allclose(res.per_sample, v * (F - 1 - r + 0.5) / F, rtol=1e-6)
    assert res.higher_is_better is True


def test_insertion_auc_single_pixel_closed_form(pixel_case) -> None:
    model, x, ranks, vals = pixel_case
    exp = make_exp(vals, x, np.zeros(4, dtype=int))
    v = x[:, 0, PIX[0], PIX[1]].double().numpy()
    r = np.array(ranks)
    res = insertion(model, exp, step=1, output="logits", baseline="zeros")
    np.testing.assert_allclose(res.per_sample, v * (F - r - 0.5) / F, rtol=1e-6)
    assert res.higher_is_better is True
    assert res.params["baseline"] == "zeros"
    assert insertion(model, exp, step=1).params["baseline"] == "blur"  # images default to blur


def test_deletion_on_groups(pixel_case) -> None:
    model, x, _, _ = pixel_case
    groups = patches((1, H, W), size=2)  # 3 x 3 patches, the read pixel in patch r1c1 (index 4)
    g = groups.n_groups
    ranks = [0, 5, 8]
    vals = np.stack([np.roll(np.linspace(1, 0, g), 0) for _ in ranks])
    for i, r in enumerate(ranks):
        order = np.argsort(-vals[i])
        vals[i, [4, order[r]]] = vals[i, [order[r], 4]]
    exp = make_exp(vals, x[:3], np.zeros(3, dtype=int), groups=groups.to_dict())
    v = x[:3, 0, PIX[0], PIX[1]].double().numpy()
    res = deletion(model, exp, step=1, output="logits")
    np.testing.assert_allclose(res.per_sample, v * (np.array(ranks) + 0.5) / g, rtol=1e-6)


def _naive_deletion(model: nn.Module, x: torch.Tensor, vals: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """Pixel flipping written out step by step: the reference for the batched, deduplicated one."""
    n = x.shape[0]
    order = torch.argsort(-vals.sum(1).flatten(1), dim=1, stable=True)
    out = np.zeros((n, order.shape[1] + 1))
    with torch.no_grad():
        for k in range(order.shape[1] + 1):
            xk = x.clone().flatten(2)
            for i in range(n):
                xk[i, :, order[i, :k]] = 0.0
            out[:, k] = torch.softmax(model(xk.view_as(x)), 1)[torch.arange(n), t].numpy()
    return out


def test_batched_curves_match_step_by_step_reference() -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.rand(3, 1, 8, 8)
    x[x < 0.4] = 0.0  # many pixels already at the baseline: their steps are skipped, then filled
    vals = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 1, 2])
    exp = make_exp(vals, x, t.numpy())
    ref = _naive_deletion(model, x, vals, t)
    for bs in ("auto", 5):
        got = deletion(model, exp, step=1, batch_size=bs).details["curves"]
        np.testing.assert_allclose(got, ref, atol=1e-6)
    assert np.ptp(ref) > 0.05  # the curves move


def test_random_order_is_seeded(pixel_case) -> None:
    model, x, _, vals = pixel_case
    exp = make_exp(vals, x, np.zeros(4, dtype=int))
    a = deletion(model, exp, order="random", step=1, seed=3).per_sample
    b = deletion(model, exp, order="random", step=1, seed=3).per_sample
    c = deletion(model, exp, order="random", step=1, seed=4).per_sample
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_infidelity_zero_for_ig_on_linear_model_with_matching_perturbations() -> None:
    model = linear(8, 3)
    x = torch.randn(6, 8)
    for base in (0.0, 0.5):
        exp = uv.explain(model, x, method="integrated_gradients", baseline=base, n_steps=4)
        res = infidelity(model, exp, baseline=base, subset_size=3, n_samples=32)
        assert res.value < 1e-9
        # the same attributions under perturbations that do not match their baseline
        other = infidelity(model, exp, baseline=base + 1.0, subset_size=3, n_samples=32)
        assert other.value > 1e-2
    shuffled = make_exp(exp.values[:, ::-1].copy(), x, exp.targets)
    assert infidelity(model, shuffled, baseline=0.5, n_samples=32).value > 1e-2


def test_infidelity_gaussian_zero_for_signed_gradient_on_linear_model() -> None:
    model = linear(8, 3)
    x = torch.randn(6, 8)
    exp = uv.explain(model, x, method="saliency", abs=False)
    assert infidelity(model, exp, perturbation="gaussian", n_samples=16).value < 1e-9
    absolute = uv.explain(model, x, method="saliency")  # |w| is not a local linear model
    assert infidelity(model, absolute, perturbation="gaussian", n_samples=16).value > 1e-3


def test_random_subsets_do_not_depend_on_chunking() -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.rand(5, 1, 16, 16)
    exp = make_exp(torch.randn(5, 1, 16, 16), x, np.array([0, 1, 2, 3, 0]))
    for fn, kw in ((faithfulness_correlation, {"n_runs": 7}),
                   (infidelity, {"n_samples": 7}),
                   (infidelity, {"n_samples": 7, "perturbation": "gaussian"})):
        a = fn(net, exp, seed=1, batch_size=3, **kw).per_sample
        b = fn(net, exp, seed=1, **kw).per_sample
        np.testing.assert_allclose(a, b, rtol=1e-5)
        assert not np.allclose(a, fn(net, exp, seed=2, **kw).per_sample)


def test_faithfulness_correlation_is_one_for_ig_on_linear_model() -> None:
    model = linear(10, 3)
    x = torch.randn(5, 10)
    exp = uv.explain(model, x, method="integrated_gradients")
    res = faithfulness_correlation(model, exp, n_runs=20, subset_size=4)
    np.testing.assert_allclose(res.per_sample, 1.0, atol=1e-5)
    flipped = make_exp(-exp.values, x, exp.targets)
    np.testing.assert_allclose(faithfulness_correlation(model, flipped, n_runs=20, subset_size=4).per_sample,
                               -1.0, atol=1e-5)


class BagOfWords(nn.Module):
    """Logit 0 = the sum of per-token weights (token 0, the pad, weighs 0); logit 1 = 0."""

    def __init__(self, vocab: int = 20) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Embedding(vocab, 1)
        with torch.no_grad():
            self.emb.weight[0] = 0.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = self.emb(ids).sum((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_comprehensiveness_and_sufficiency_closed_form() -> None:
    model = BagOfWords().eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (4, 10), generator=g)
    w = model.emb.weight.detach()[ids, 0]  # exact token attributions of the linear bag of words
    exp = make_exp(w.numpy(), ids, np.zeros(4, dtype=int), method="occlusion", modality="text")
    bins = (0.1, 0.5)
    srt = w.sort(1, descending=True).values.double().numpy()
    top = np.stack([srt[:, :1].sum(1), srt[:, :5].sum(1)], 1)
    comp = comprehensiveness(model, exp, bins=bins, baseline=0, output="logits")
    np.testing.assert_allclose(comp.per_sample, top.mean(1), rtol=1e-5)
    suff = sufficiency(model, exp, bins=bins, baseline=0, output="logits")
    np.testing.assert_allclose(suff.per_sample, (srt.sum(1, keepdims=True) - top).mean(1), rtol=1e-5, atol=1e-6)
    assert np.abs(top).min() > 1e-3


def _imputation_reference(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Noisy linear imputation without noise, by a direct sparse solve (Rong et al., 2022)."""
    h, w = img.shape
    idx = -np.ones((h, w), int)
    ids = np.argwhere(m)
    idx[m] = np.arange(len(ids))
    a = sp.lil_matrix((len(ids), len(ids)))
    b = np.zeros(len(ids))
    weights = {(1, 1): 1 / 12, (0, 1): 1 / 6, (-1, 1): 1 / 12, (1, -1): 1 / 12, (0, -1): 1 / 6,
               (-1, -1): 1 / 12, (1, 0): 1 / 6, (-1, 0): 1 / 6}
    for k, (r, c) in enumerate(ids):
        for (dr, dc), wt in weights.items():
            rr, cc = r + dr, c + dc
            if 0 <= rr < h and 0 <= cc < w:
                a[k, k] += wt
                if m[rr, cc]:
                    a[k, idx[rr, cc]] -= wt
                else:
                    b[k] += wt * img[rr, cc]
    out = img.copy()
    out[m] = sla.spsolve(a.tocsc(), b)
    return out


def test_noisy_linear_imputation_matches_direct_solve() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 10)
    removed = (torch.rand(2, 1, 12, 10) < 0.7).expand(2, 3, 12, 10).contiguous()
    out = noisy_linear_imputation(x, removed, noise=0.0)
    for n in range(2):
        for c in range(3):
            ref = _imputation_reference(x[n, c].double().numpy(), removed[n, c].numpy())
            np.testing.assert_allclose(out[n, c].double().numpy(), ref, atol=1e-5)
    kept = ~removed
    assert torch.equal(out[kept], x[kept])
    noisy = noisy_linear_imputation(x, removed, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert 0.005 < float((noisy - out)[removed].std()) < 0.015


def test_road_single_pixel_closed_form() -> None:
    # a constant image c with the read pixel at v: once removed, the pixel is imputed from
    # constant surroundings, so it reads c (no noise); kept, it reads v
    model = SinglePixel(*PIX).eval()
    c = torch.tensor([0.2, -0.4, 1.0]).view(3, 1, 1, 1)
    x = c.expand(3, 1, H, W).clone()
    x[:, 0, PIX[0], PIX[1]] = torch.tensor([1.5, 0.7, -2.0])
    vals = _ranked(x, [0, 0, 0])  # the read pixel ranks first
    exp = make_exp(vals, x, np.zeros(3, dtype=int))
    pct = (0.1, 0.5, 0.9)
    morf = road(model, exp, percentages=pct, noise=0.0, output="logits")
    np.testing.assert_allclose(morf.details["curves"], c.view(3, 1).expand(3, 3).numpy(), atol=1e-5)
    lerf = road(model, exp, order="lerf", percentages=pct, noise=0.0, output="logits")
    np.testing.assert_allclose(lerf.per_sample, [1.5, 0.7, -2.0], atol=1e-6)
    noisy = road(model, exp, percentages=pct, noise=0.05, output="logits", seed=1)
    assert 0 < np.abs(noisy.details["curves"] - c.view(3, 1).numpy()).max() < 0.3
    np.testing.assert_array_equal(noisy.per_sample, road(model, exp, percentages=pct, noise=0.05,
                                                         output="logits", seed=1).per_sample)


def test_errors() -> None:
    model = linear(6, 3)
    x = torch.randn(4, 6)
    exp = uv.explain(model, x, method="saliency")
    with pytest.raises(OptionError, match="order must be"):
        deletion(model, exp, order="best")  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(OptionError, match="n_steps must be"):
        deletion(model, exp, n_steps=0)
    with pytest.raises(OptionError, match="step must be"):
        insertion(model, exp, step=0)
    with pytest.raises(OptionError, match="output must be"):
        deletion(model, exp, output="prob")  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(OptionError, match="features="):
        deletion(model, exp, features="pixels")
    with pytest.raises(InputError, match="do not fit"):
        deletion(model, make_exp(np.zeros((4, 5)), x, exp.targets))
    with pytest.raises(InputError, match="expected an unveil Explanation"):
        deletion(model, exp.values)  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(OptionError, match="subset_size"):
        faithfulness_correlation(model, exp, subset_size=7)
    with pytest.raises(OptionError, match="n_runs"):
        faithfulness_correlation(model, exp, n_runs=1)
    with pytest.raises(OptionError, match="perturbation must be"):
        infidelity(model, exp, perturbation="swap")  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(InputError, match="ROAD imputes images"):
        road(model, exp)
    with pytest.raises(OptionError, match="bins"):
        comprehensiveness(model, exp, bins=(0.0, 2.0))
    with pytest.raises(OptionError, match="accuracy"):
        deletion(nn.Sequential(nn.Linear(6, 1), nn.Flatten(0)).eval(),
                 make_exp(exp.values, x, None), output="accuracy")


@pytest.mark.parametrize("train", [False, True])
def test_model_left_unchanged(train: bool) -> None:
    torch.manual_seed(0)
    net = TinyCNN()
    net.train(train)
    x = torch.rand(3, 1, 16, 16)
    exp = make_exp(torch.randn(3, 1, 16, 16), x, np.array([0, 1, 2]))
    snap = snapshot(net)
    with pytest.warns(UserWarning, match="training mode") if train else _nothing():
        deletion(net, exp, n_steps=8)
        faithfulness_correlation(net, exp, n_runs=4)
    assert_unchanged(net, snap)
    broken = nn.Sequential(net, Raises()).train(train)
    snap = snapshot(broken)
    with pytest.raises(RuntimeError, match="boom"), \
            pytest.warns(UserWarning, match="training mode") if train else _nothing():
        insertion(broken, exp, n_steps=4)
    assert_unchanged(broken, snap)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None
