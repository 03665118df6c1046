"""TracInCP against Captum's TracInCP on the same model, checkpoints and data; the recorder; errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unveil.data_attribution import training_influence
from unveil.data_attribution.tracin import CheckpointRecorder, tracin
from unveil.errors import InputError, OptionError


def _digits(n_train: int = 240, n_test: int = 8) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x / 16.0, dtype=torch.float32)
    yt = torch.tensor(y)
    return xt[:n_train], yt[:n_train], xt[1500:1500 + n_test], yt[1500:1500 + n_test]


def _train_with_checkpoints(x: torch.Tensor, y: torch.Tensor, folder: Path | None,
                            lrs: tuple[float, ...] = (0.5, 0.3, 0.1)) -> tuple[nn.Module, CheckpointRecorder]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.Tanh(), nn.Linear(16, 10))
    rec = CheckpointRecorder(folder)
    for lr in lrs:
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for i in range(0, len(x), 40):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 40]), y[i:i + 40]).backward()
            opt.step()
        rec.save(model, lr=lr)
    return model.eval(), rec


def _captum(model: nn.Module, rec: CheckpointRecorder, tmp: Path, x: torch.Tensor, y: torch.Tensor,
            xt: torch.Tensor, yt: torch.Tensor, layers: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from captum.influence import TracInCP
    from safetensors.torch import load_file

    paths = []
    for i, (ck, lr) in enumerate(zip(rec.checkpoints, rec.lrs, strict=True)):
        p = tmp / f"captum-{i}.pt"
        torch.save({"state": load_file(str(ck)), "lr": lr}, p)
        paths.append(str(p))

    def load(m: nn.Module, path: str) -> float:
        ck = torch.load(path, weights_only=True)
        m.load_state_dict(ck["state"])
        return float(ck["lr"])

    fresh = nn.Sequential(nn.Linear(x.shape[1], 16), nn.Tanh(), nn.Linear(16, 10))
    tc = TracInCP(fresh, torch.utils.data.TensorDataset(x, y), paths, checkpoints_load_func=load, layers=layers,
                  loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=60, sample_wise_grads_per_batch=True)
    with warnings.catch_warnings():  # Captum's own notice that it set requires_grad on the inputs
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        scores = tc.influence((xt, yt))
        selfi = tc.self_influence(show_progress=False)
    return scores, selfi


@pytest.mark.parametrize("params,layers", [("all", None), ("last", ["2"])])
def test_tracin_matches_captum_tracincp(tmp_path: Path, params: str, layers: list[str] | None) -> None:
    x, y, xt, yt = _digits()
    model, rec = _train_with_checkpoints(x, y, tmp_path / "ckpts")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = training_influence(model, train=(x, y), inputs=xt, targets=yt, method="tracin", params=params,
                                checkpoints=rec.checkpoints, lrs=rec.lrs)
    _, selfi, _, _ = tracin(model, x, y, xt, yt, checkpoints=rec.checkpoints, lrs=rec.lrs, params=params)
    ref, ref_self = _captum(model, rec, tmp_path, x, y, xt, yt, layers)
    assert res.scores.shape == ref.shape == (len(xt), len(x))
    scale = float(ref.abs().max())
    torch.testing.assert_close(res.scores.float(), ref.float(), atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(selfi.float(), ref_self.float(), atol=1e-5 * float(ref_self.max()), rtol=1e-4)
    for k, v in model.state_dict().items():  # the model is left as it was
        assert torch.equal(v, before[k])
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_in_memory_and_file_checkpoints_agree(tmp_path: Path) -> None:
    x, y, xt, yt = _digits(120, 4)
    model, rec_files = _train_with_checkpoints(x, y, tmp_path)
    _, rec_mem = _train_with_checkpoints(x, y, None)
    a = tracin(model, x, y, xt, yt, checkpoints=rec_files.checkpoints, lrs=rec_files.lrs)[0]
    b = tracin(model, x, y, xt, yt, checkpoints=rec_mem.checkpoints, lrs=rec_mem.lrs)[0]
    torch.testing.assert_close(a, b)


def test_projection_approximates_the_exact_scores(tmp_path: Path) -> None:
    """TracInCP-RandProj: with k large the projected dot products are unbiased and close."""
    x, y, xt, yt = _digits(120, 4)
    model, rec = _train_with_checkpoints(x, y, None)
    exact = tracin(model, x, y, xt, yt, checkpoints=rec.checkpoints, lrs=rec.lrs)[0].double()
    approx = tracin(model, x, y, xt, yt, checkpoints=rec.checkpoints, lrs=rec.lrs, proj_dim=2048)[0].double()
    corr = np.corrcoef(exact.flatten().numpy(), approx.flatten().numpy())[0, 1]
    assert corr > 0.95
    again = tracin(model, x, y, xt, yt, checkpoints=rec.checkpoints, lrs=rec.lrs, proj_dim=2048)[0].double()
    torch.testing.assert_close(approx, again)  # seeded


def test_self_influence_of_a_training_row_is_its_own_score() -> None:
    x, y, _, _ = _digits(60, 1)
    model, rec = _train_with_checkpoints(x, y, None)
    scores, selfi, _, _ = tracin(model, x, y, x[:5], y[:5], checkpoints=rec.checkpoints, lrs=rec.lrs)
    torch.testing.assert_close(torch.diagonal(scores[:, :5]), selfi[:5])
    assert bool((selfi >= 0).all())


def test_bad_checkpoints_are_refused_clearly(tmp_path: Path) -> None:
    x, y, xt, yt = _digits(40, 2)
    model, rec = _train_with_checkpoints(x, y, None)
    with pytest.raises(InputError, match="learning rates for 3 checkpoints"):
        tracin(model, x, y, xt, yt, checkpoints=rec.checkpoints, lrs=[0.1, 0.2])
    other = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
    with pytest.raises(InputError, match="shape"):
        tracin(model, x, y, xt, yt, checkpoints=[other.state_dict()])
    with pytest.raises(InputError, match="does not exist"):
        tracin(model, x, y, xt, yt, checkpoints=[tmp_path / "missing.safetensors"])
    with pytest.raises(OptionError, match="proj_dim"):
        tracin(model, x, y, xt, yt, proj_dim=0)
    with pytest.raises(OptionError, match="no option"):
        training_influence(model, train=(x, y), inputs=xt, targets=yt, method="tracin", checkpoint=[])


def test_saved_learning_rates_and_folders_are_read(tmp_path: Path) -> None:
    """Without lrs=, each checkpoint's saved learning rate counts (the recorder's, or Captum's
    "learning_rate" key); a folder means its checkpoint files in name order."""
    x, y, xt, yt = _digits(80, 3)
    model, rec = _train_with_checkpoints(x, y, tmp_path / "ckpts")
    given = tracin(model, x, y, xt, yt, checkpoints=rec.checkpoints, lrs=rec.lrs)[0]
    saved = tracin(model, x, y, xt, yt, checkpoints=tmp_path / "ckpts")[0]
    torch.testing.assert_close(saved, given)
    from safetensors.torch import load_file

    captum_style = [{"model_state_dict": load_file(str(p)), "learning_rate": lr}
                    for p, lr in zip(rec.checkpoints, rec.lrs, strict=True)]
    torch.testing.assert_close(tracin(model, x, y, xt, yt, checkpoints=captum_style)[0], given)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no checkpoint files"):
        tracin(model, x, y, xt, yt, checkpoints=tmp_path / "empty")


def test_self_influence_finds_flipped_labels() -> None:
    """Pruthi et al. 2020 (Sec. 4.1): ranking training rows by TracIn self-influence surfaces
    mislabelled ones. 5% of 600 digits get a wrong label; an MLP trained by SGD on them is
    checkpointed every 5 epochs."""
    from sklearn.datasets import load_digits

    from unveil.data_attribution.evaluation import auc

    xs, ys = load_digits(return_X_y=True)
    x = torch.tensor(xs[:600] / 16, dtype=torch.float32)
    y = torch.tensor(ys[:600])
    rng = np.random.default_rng(0)
    flip = rng.choice(600, 30, replace=False)
    y[flip] = (y[flip] + torch.tensor(rng.integers(1, 10, 30))) % 10
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    rec = CheckpointRecorder()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(30):
        for rows in torch.randperm(600).split(50):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
        if epoch % 5 == 4:
            rec.save(model, lr=0.1)
    model.eval()
    flipped = np.zeros(600, dtype=bool)
    flipped[flip] = True
    for params in ("all", "last"):
        _, selfi, _, _ = tracin(model, x, y, x[:1], y[:1], checkpoints=rec.checkpoints, params=params)
        assert auc(selfi.numpy(), flipped) >= 0.9
