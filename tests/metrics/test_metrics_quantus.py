"""Cross-checks with Quantus 0.6.0 on the same inputs and explanations.

Conventions that differ, checked here explicitly:

- Pixel flipping: Quantus's curve omits the unperturbed input and its AUC is
  ``np.trapz(curve, dx=1)`` (``np.trapezoid``) over the steps; unveil's curve starts at the unperturbed input and
  its AUC is over the fraction of features removed, so ``F * auc_unveil = auc_quantus +
  (c_0 + c_1) / 2`` for ``F`` one-pixel steps.
- Sensitivity: Quantus draws the noise inside; both are given identical draws here.
- Model-parameter randomisation: Quantus re-seeds every layer with ``seed + 1``; unveil seeds
  layer ``i`` with ``seed + i`` (so cascaded layers do not receive the same draws). With
  unveil's seeding patched to Quantus's, the per-layer Spearman similarities agree.
- Sparseness: Quantus adds ``1e-7`` to the max-normalised map; unveil does not (agreement to
  1e-5 on maps without zeros).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
import torch
from _mutil import Sliding, digits, paste

import unveil as uv
from unveil.metrics import (
    deletion,
    max_sensitivity,
    pointing_game,
    rank_accuracy,
    relevance_mass,
    sanity_check,
    sparseness,
)
from unveil.metrics import robustness as rob
from unveil.metrics import sanity as san


def _saliency(model, inputs, targets, **_kw):  # Quantus's explain_func signature
    t = torch.as_tensor(np.asarray(targets))
    return uv.explain(model, torch.as_tensor(np.asarray(inputs)), method="saliency", target=t).values


@pytest.fixture
def case():
    model, xs, _ = digits()
    x = xs[:8]
    exp = uv.explain(model, x, method="saliency")
    return model, x, exp


def test_pixel_flipping_matches_quantus(torchvision_stub, case) -> None:
    quantus: Any = importlib.import_module("quantus")  # untyped

    model, x, exp = case
    x, exp = x[:4], exp[:4]
    step = 8
    pf = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.0, disable_warnings=True)
    ref = np.asarray(pf(model=model, x_batch=x.numpy(), y_batch=exp.targets, a_batch=exp.values,
                        device="cpu"))
    res = deletion(model, exp, step=step, baseline="zeros", batch_size=128)
    curves = res.details["curves"]
    np.testing.assert_allclose(curves[:, 1:], ref, atol=2e-5)
    assert np.ptp(ref) > 0.5
    # the AUC conventions, related exactly
    k = curves.shape[1] - 1
    q_auc = np.trapezoid(ref, dx=1, axis=1)
    np.testing.assert_allclose(res.per_sample * k, q_auc + (curves[:, 0] + curves[:, 1]) / 2, rtol=1e-5)


def test_max_sensitivity_matches_quantus_with_identical_draws(torchvision_stub, case) -> None:
    quantus: Any = importlib.import_module("quantus")  # untyped

    model, x, exp = case
    n, radius, seed = 5, 0.2, 3
    draws = [rob._draw(seed, r, tuple(x.shape), "uniform", radius).float().numpy() for r in range(n)]
    calls = iter(range(n))

    def injected(arr, indices, **_kw):
        return arr + draws[next(calls)].reshape(arr.shape)

    ms = quantus.MaxSensitivity(nr_samples=n, perturb_func=injected, disable_warnings=True)
    ref = np.asarray(ms(model=model, x_batch=x.numpy(), y_batch=exp.targets, a_batch=exp.values,
                        explain_func=_saliency, device="cpu"))
    got = max_sensitivity(model, exp, n_samples=n, radius=radius, seed=seed).per_sample
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    assert ref.min() > 0.05


def test_localisation_matches_quantus(torchvision_stub) -> None:
    quantus: Any = importlib.import_module("quantus")  # untyped

    model, xs, ys = digits()
    canvas, boxes = paste(xs[:12], seed=1)
    net = Sliding(model).eval()
    exp = uv.explain(net, canvas, method="saliency", target=ys[:12])
    masks = uv.metrics.boxes_to_masks(boxes, (64, 64)).unsqueeze(1).numpy()
    kw = {"model": net, "x_batch": canvas.numpy(), "y_batch": ys[:12].numpy(), "a_batch": exp.values,
          "s_batch": masks.astype(float), "device": "cpu"}
    for ours, theirs in ((pointing_game, quantus.PointingGame), (relevance_mass, quantus.RelevanceMassAccuracy),
                         (rank_accuracy, quantus.RelevanceRankAccuracy)):
        ref = np.asarray(theirs(disable_warnings=True)(**kw), dtype=float)
        np.testing.assert_allclose(ours(net, exp, box=boxes).per_sample, ref, rtol=1e-6)  # Quantus sums in float32
        np.testing.assert_allclose(ours(net, exp, mask=masks).per_sample, ref, rtol=1e-6)


def test_sparseness_matches_quantus(torchvision_stub, case) -> None:
    quantus: Any = importlib.import_module("quantus")  # untyped

    model, x, exp = case
    ref = np.asarray(quantus.Sparseness(disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=exp.targets, a_batch=exp.values, device="cpu"))
    got = sparseness(model, exp).per_sample
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert 0.2 < ref.min() < ref.max() < 0.9


def test_model_parameter_randomisation_matches_quantus_under_its_seeding(torchvision_stub, case,
                                                                         monkeypatch) -> None:
    quantus: Any = importlib.import_module("quantus")  # untyped

    model, x, exp = case
    mprt = quantus.MPRT(seed=42, disable_warnings=True)
    ref = mprt(model=model, x_batch=x.numpy(), y_batch=exp.targets, a_batch=exp.values,
               explain_func=_saliency, device="cpu")
    original = san._randomize
    monkeypatch.setattr(san, "_randomize", lambda module, _seed, device: original(module, 43, device))
    res = sanity_check(model, x, method="saliency", target=torch.as_tensor(exp.targets),
                       measures=["spearman_abs"], random_logit=False)
    assert res.layers == [k for k in ref if k != "original"]
    for name in res.layers:
        np.testing.assert_allclose(res.per_sample[name]["spearman_abs"], ref[name], atol=1e-6)
    monkeypatch.setattr(san, "_randomize", original)
    ours = sanity_check(model, x, method="saliency", measures=["spearman_abs"], random_logit=False)
    assert ours.similarity[ours.layers[0]] != res.similarity[res.layers[0]]  # seed 0 + 0, not 43
