"""Training-data attribution: unveil's TracIn and TRAK vs Captum's TracInCP and dattri (0.3.0,
installed ``--no-deps``; rows skipped when it does not import), time and LDS side by side.

Workload: a 64-32-10 ReLU MLP on scikit-learn digits (offline), 300 training rows and 40
explained rows (quick: 120 and 10). Models are trained full-batch with Adam (150 steps, lr
1e-2, weight decay 1e-4); model 0 is saved after steps 50, 100 and 150 (TracIn's checkpoints,
learning rate 1e-2 each). TRAK ensembles use models trained from other seeds.

LDS (the package's :func:`unveil.data_attribution.evaluation.lds`): 30 random halves of the
training set (quick: 8), each trained twice from different seeds (once in quick), the explained
rows' losses averaged; per explained row, Spearman between the summed scores of the kept rows
and minus the loss; the mean over rows. Every method is scored on the same subsets and retrained
models. Times are one call each (training features and scores), after a warm-up call (none in quick
mode, nor for the ensembles, whose one call is long enough). dattri's TRAK gets ``regularization=1e-2`` on its norm-scaled features, unveil's the
default ``damping=0.1`` of the mean kernel diagonal.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import Context, Row


def _data(n_train: int, n_test: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    xt = torch.tensor(x[perm] / 16.0, dtype=torch.float32)
    yt = torch.tensor(y[perm])
    return xt[:n_train], yt[:n_train], xt[1500:1500 + n_test], yt[1500:1500 + n_test]


def _make() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _train(x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 150,
           save_at: tuple[int, ...] = ()) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(seed)
    m = _make()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-4)
    saved = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        if step in save_at:
            saved.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    return m.eval(), saved


def _timed(fn: Any, warm: bool = True) -> tuple[Any, float]:
    if warm:
        fn()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _captum_tracin(ckpts: list[dict[str, torch.Tensor]], lr: float, x: torch.Tensor, y: torch.Tensor,
                   xt: torch.Tensor, yt: torch.Tensor, tmp: Any) -> torch.Tensor:
    from captum.influence import TracInCP

    paths = []
    for i, st in enumerate(ckpts):
        p = tmp / f"c{i}.pt"
        torch.save({"state": st, "lr": lr}, p)
        paths.append(str(p))

    def load(m: nn.Module, path: str) -> float:
        ck = torch.load(path, weights_only=True)
        m.load_state_dict(ck["state"])
        return float(ck["lr"])

    tc = TracInCP(_make(), torch.utils.data.TensorDataset(x, y), paths, checkpoints_load_func=load,
                  loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=len(x), sample_wise_grads_per_batch=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tc.influence((xt, yt))


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """dattri draws tqdm bars on stderr for every call: kept out of the table while it runs."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _dattri_task(model: nn.Module, ckpts: list[dict[str, torch.Tensor]], margin: bool) -> Any:
    from dattri.task import AttributionTask

    def f(params: Any, data: Any) -> torch.Tensor:
        xi, yi = data
        out = torch.func.functional_call(model, params, xi.unsqueeze(0))
        logp = -nn.functional.cross_entropy(out, yi.unsqueeze(0))
        if not margin:
            return -logp
        return logp - torch.log(1 - torch.exp(logp))

    return AttributionTask(loss_func=f, model=model, checkpoints=ckpts)


def _dattri_tracin(model: nn.Module, ckpts: list[dict[str, torch.Tensor]], lr: float, x: torch.Tensor,
                   y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    from dattri.algorithm.tracin import TracInAttributor

    att = TracInAttributor(task=_dattri_task(model, ckpts, margin=False),
                           weight_list=torch.full((len(ckpts),), lr), normalized_grad=False, device="cpu")
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(x))
    tl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=len(xt))
    with warnings.catch_warnings(), _no_progress_bars():
        warnings.simplefilter("ignore")
        return att.attribute(dl, tl).T  # dattri: [n_train, n_test]


def _dattri_trak(model: nn.Module, states: list[dict[str, torch.Tensor]], k: int, x: torch.Tensor,
                 y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    from dattri.algorithm.trak import TRAKAttributor

    def prob(params: Any, data: Any) -> torch.Tensor:
        xi, yi = data
        out = torch.func.functional_call(model, params, xi.unsqueeze(0))
        return torch.exp(-nn.functional.cross_entropy(out, yi.unsqueeze(0)))

    att = TRAKAttributor(task=_dattri_task(model, states, margin=True), correct_probability_func=prob,
                         device="cpu", projector_kwargs={"proj_dim": k, "device": "cpu"}, regularization=1e-2)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    tl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=64)
    with warnings.catch_warnings(), _no_progress_bars():
        warnings.simplefilter("ignore")
        att.cache(dl)
        return att.attribute(tl).T


def run(ctx: Context) -> list[Row]:
    import tempfile
    from pathlib import Path

    from unveil.data_attribution import training_influence
    from unveil.data_attribution.evaluation import lds

    torch.manual_seed(0)
    n_train, n_test = (80, 6) if ctx.quick else (300, 40)
    n_models, subsets, reps, k = (3, 4, 1, 64) if ctx.quick else (50, 30, 2, 256)
    warm = not ctx.quick
    x, y, xt, yt = _data(n_train, n_test)
    model, ckpts = _train(x, y, 0, save_at=(50, 100, 150))
    ensemble = [model] + [_train(x, y, s)[0] for s in range(1, n_models)]
    lr = 1e-2

    seen: dict[bytes, np.ndarray] = {}

    def retrain(w: np.ndarray) -> np.ndarray:
        key = np.asarray(w > 0).tobytes()
        if key not in seen:
            rows = torch.tensor(np.flatnonzero(w > 0))
            base = 10_000 + len(seen) * reps
            fitted = [_train(x[rows], y[rows], base + r)[0] for r in range(reps)]
            with torch.no_grad():
                seen[key] = np.mean([nn.functional.cross_entropy(m(xt), yt, reduction="none").numpy()
                                     for m in fitted], axis=0)
        return seen[key]

    def score(s: torch.Tensor) -> float:
        return float(lds(s.detach().double().numpy(), retrain, subsets=subsets, seed=1)["lds"])

    workload = f"digits MLP, {n_train} train x {n_test} test"
    rows: list[Row] = []
    try:
        import dattri  # noqa: F401

        has_dattri = True
    except Exception:  # noqa: BLE001  # any import failure: the rows say dattri is missing
        has_dattri = False

    # TracIn over 3 checkpoints, all parameters
    ours, t_ours = _timed(lambda: training_influence(model, (x, y), xt, yt, method="tracin", checkpoints=ckpts,
                                                     lrs=lr).scores, warm)
    with tempfile.TemporaryDirectory() as d:
        ref, t_ref = _timed(lambda: _captum_tracin(ckpts, lr, x, y, xt, yt, Path(d)), warm)
    agree = float(np.corrcoef(ours.flatten().numpy(), ref.flatten().numpy())[0, 1])
    l_ours, l_ref = score(ours), score(ref)
    rows.append(Row("data attribution", "tracin", workload + ", 3 ckpts", t_ours, "captum TracInCP", t_ref,
                    note=f"LDS {l_ours:.3f} vs {l_ref:.3f}; score corr {agree:.6f}",
                    extra={"lds": l_ours, "lds_ref": l_ref, "agreement": agree}))
    if has_dattri:
        dref, t_d = _timed(lambda: _dattri_tracin(model, ckpts, lr, x, y, xt, yt), warm)
        agree_d = float(np.corrcoef(ours.flatten().numpy(), dref.flatten().numpy())[0, 1])
        l_d = score(dref)
        rows.append(Row("data attribution", "tracin", workload + ", 3 ckpts", t_ours, "dattri TracIn", t_d,
                        note=f"LDS {l_ours:.3f} vs {l_d:.3f}; score corr {agree_d:.6f}",
                        extra={"lds": l_ours, "lds_ref": l_d, "agreement": agree_d}))

    # TRAK of one model and of the ensemble
    for label, models in ((f"trak-1, k={k}", [model]), (f"trak-{n_models}, k={k}", ensemble)):
        ours, t_ours = _timed(lambda models=models: training_influence(  # type: ignore[misc]
            model, (x, y), xt, yt, method="trak", checkpoints=models, proj_dim=k).scores, warm and len(models) == 1)
        l_ours = score(ours)
        ref_name, t_ref2, note = "", None, f"LDS {l_ours:.3f}"
        extra: dict[str, Any] = {"lds": l_ours}
        if has_dattri:
            states = [{kk: v.detach().clone() for kk, v in m.state_dict().items()} for m in models]
            dref, t_ref2 = _timed(lambda states=states: _dattri_trak(_make(), states, k, x, y, xt, yt), warm and len(models) == 1)
            l_d = score(dref)
            ref_name, note = "dattri TRAK", f"LDS {l_ours:.3f} vs {l_d:.3f}"
            extra["lds_ref"] = l_d
        else:
            note += " (dattri not importable)"
        rows.append(Row("data attribution", label.split(",")[0], workload + f", {label.split(', ')[1]}", t_ours,
                        ref_name, t_ref2, note=note, extra=extra))

    if ctx.quick:
        return rows
    # influence functions through the last layer, for context (no reference row)
    ours, t_ours = _timed(lambda: training_influence(model, (x, y), xt, yt, method="influence", params="last").scores,
                          warm)
    l_ours = score(ours)
    rows.append(Row("data attribution", "influence (last layer)", workload, t_ours, note=f"LDS {l_ours:.3f}",
                    extra={"lds": l_ours}))
    return rows
