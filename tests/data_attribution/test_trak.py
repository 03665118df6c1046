"""TRAK: the formula on a logistic model, seeded projections, reusable features, and the ensemble's
linear datamodeling score on a small MLP (TRAK-50 beats TRAK-1 by at least 0.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unveil.data_attribution import training_influence
from unveil.data_attribution.projection import Projector
from unveil.data_attribution.trak import TrakFeatures, trak, trak_features
from unveil.errors import InputError, OptionError


def _breast_cancer() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float64), torch.tensor(y)


def test_trak_equals_its_formula_on_a_logistic_model() -> None:
    """Unprojected, undamped: ``tau_ti = f'_t^T (Phi^T Phi)^-1 f'_i (1 - p_i)`` with ``f`` the margin
    ``(2y - 1) z`` of a one-logit model, ``f' = (2y - 1) [x, 1]``, computed here by hand."""
    x, y = _breast_cancer()
    x = x[:, :6]
    torch.manual_seed(0)
    model = nn.Linear(6, 1).double()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=50)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y.double())
        loss.backward()
        return loss

    opt.step(closure)
    model.eval()
    res = training_influence(model, train=(x[:200], y[:200]), inputs=x[300:305], targets=y[300:305], method="trak",
                             proj_dim=None, damping=0.0)
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    sign = 2.0 * y.double() - 1.0
    phi = sign[:200, None] * xb[:200]
    phi_t = sign[300:305, None] * xb[300:305]
    with torch.no_grad():
        p = torch.sigmoid(sign[:200] * model(x[:200]).squeeze(1))
    want = phi_t @ torch.linalg.inv(phi.T @ phi) @ phi.T * (1 - p)[None, :]
    torch.testing.assert_close(res.scores.double(), want, rtol=1e-6, atol=1e-9)


def test_projection_is_seeded_and_preserves_dot_products() -> None:
    g = torch.randn(6, 5000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for kind in ("rademacher", "gaussian"):
        a = Projector(4096, kind, seed=3)(g)  # type: ignore[arg-type]
        b = Projector(4096, kind, seed=3, block=700, max_bytes=0)(g)  # type: ignore[arg-type]  # regenerated per block
        c = Projector(4096, kind, seed=4)(g)  # type: ignore[arg-type]
        exact = g @ g.T
        assert not torch.allclose(a, c)
        # Johnson-Lindenstrauss: relative error of the Gram matrix about sqrt(2/k)
        assert float((a @ a.T - exact).abs().max() / exact.diagonal().mean()) < 0.1
        if kind == "rademacher":
            torch.testing.assert_close(Projector(4096, kind, seed=3, block=8192)(g), a)
        assert b.shape == a.shape


def _digits(n_train: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    xt = torch.tensor(x[perm] / 16.0, dtype=torch.float32)
    yt = torch.tensor(y[perm])
    return xt[:n_train], yt[:n_train], xt[1500:1540], yt[1500:1540]


def _mlp_trainer(x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> object:
    def train(rows: torch.Tensor, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 10))
        opt = torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-4)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[rows]), y[rows]).backward()
            opt.step()
        return m.eval()

    return train


def test_features_computed_once_give_the_same_scores() -> None:
    x, y, xt, yt = _digits(120)
    train = _mlp_trainer(x, y, steps=30)
    models = [train(torch.arange(len(x)), s) for s in range(3)]  # type: ignore[operator]
    direct, _, _ = trak(models[0], x, y, xt[:5], yt[:5], checkpoints=models, proj_dim=64)
    parts = [trak_features(models[0], ck, s, x, y, proj_dim=64)
             for s, ck in enumerate(__import__("unveil.data_attribution.projection", fromlist=["x"])
                                    .load_checkpoints(models[0], models))]
    feats = TrakFeatures(torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]),
                         {"proj_dim": 64, "projection": "rademacher", "seed": 0, "params": ["0.weight", "0.bias", "2.weight", "2.bias"], "n_models": 3})
    again, _, _ = trak(models[0], x, y, xt[:5], yt[:5], checkpoints=models, proj_dim=64, train_features=feats)
    torch.testing.assert_close(direct, again)
    with pytest.raises(InputError, match="computed with"):
        trak(models[0], x, y, xt[:5], yt[:5], checkpoints=models, proj_dim=32, train_features=feats)
    with pytest.raises(OptionError, match="proj_dim"):
        trak(models[0], x, y, xt[:5], yt[:5], proj_dim=-1)
    with pytest.raises(OptionError, match="damping"):
        trak(models[0], x, y, xt[:5], yt[:5], damping=-1.0)


def test_trak50_has_a_higher_lds_than_trak1_on_a_small_mlp() -> None:
    """Park et al. 2023 (Fig. 5): ensembling over independently trained models raises the linear
    datamodeling score. Measured with the package's LDS: 30 random halves of the training set,
    each trained twice (different seeds, outputs averaged), against the summed scores."""
    from unveil.data_attribution.evaluation import lds

    torch.set_num_threads(1)
    x, y, xt, yt = _digits(300)
    train = _mlp_trainer(x, y)
    models = [train(torch.arange(len(x)), s) for s in range(50)]  # type: ignore[operator]

    seen: dict[bytes, np.ndarray] = {}  # both scores are measured on the same subsets: train each once

    def retrain(w: np.ndarray) -> np.ndarray:
        key = np.asarray(w > 0).tobytes()
        if key in seen:
            return seen[key]
        rows = torch.tensor(np.flatnonzero(w > 0))
        seed = int(rows.sum()) % 10_000
        fitted = [train(rows, seed + r) for r in range(2)]  # type: ignore[operator]
        with torch.no_grad():
            losses = [nn.functional.cross_entropy(m(xt), yt, reduction="none") for m in fitted]
        seen[key] = torch.stack(losses).mean(0).numpy()
        return seen[key]

    one = training_influence(models[0], train=(x, y), inputs=xt, targets=yt, method="trak", proj_dim=256)
    fifty = training_influence(models[0], train=(x, y), inputs=xt, targets=yt, method="trak", proj_dim=256,
                               checkpoints=models)
    lds1 = lds(one, retrain, subsets=30, seed=1)["lds"]
    lds50 = lds(fifty, retrain, subsets=30, seed=1)["lds"]
    print(f"LDS TRAK-1 {lds1:.3f}, TRAK-50 {lds50:.3f}")
    assert lds50 - lds1 >= 0.1, (lds1, lds50)
    assert lds50 > 0.3
