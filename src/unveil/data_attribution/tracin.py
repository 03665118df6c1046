"""TracIn: training-data influence by tracing gradient descent (Pruthi, Liu, Kale and Sundararajan,
NeurIPS 2020), in its checkpoint form TracInCP.

``score(z_test, z_i) = sum_t lr_t * grad L(theta_t, z_test) . grad L(theta_t, z_i)`` over saved
checkpoints ``theta_t`` with the learning rate ``lr_t`` used after each. A positive score means a
gradient step on row ``i`` lowers the test row's loss: a proponent, the sign convention of
:class:`~unveil.data_attribution.TrainingAttribution`. Self-influence ``sum_t lr_t
||grad L(theta_t, z_i)||^2`` ranks rows that the model found hard (often mislabelled ones).

Gradients are taken for all parameters or only the last layer's (``params="last"``, the cheap
variant that Captum's ``TracInCP(layers=[...])`` also offers); ``proj_dim=k`` replaces them by a
seeded random projection (TracInCP-RandProj), so scores are dot products in ``k`` dimensions.

:class:`CheckpointRecorder` saves the states during a training loop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InputError, OptionError
from .estimators import Problem, register_estimator
from .projection import Projector, load_checkpoints, projected_gradients

__all__ = ["CheckpointRecorder", "tracin", "tracin_features"]


class CheckpointRecorder:
    """Save the model's state during training, for TracIn.

    Call :meth:`save` after each epoch (or every few steps) with the learning rate used next::

        rec = CheckpointRecorder()            # in memory; CheckpointRecorder("ckpts/") writes
        for epoch in range(3):                # .safetensors files there
            train_one_epoch(model, opt)
            rec.save(model, lr=opt.param_groups[0]["lr"])
        uv.training_influence(model, train=(X, y), inputs=x, targets=t, method="tracin",
                              checkpoints=rec.checkpoints, lrs=rec.lrs)
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoints: list[Any] = []
        self.lrs: list[float] = []

    def save(self, model: nn.Module, lr: float) -> Any:
        """Record the model's current state with learning rate ``lr``; returns what was stored
        (``{"model_state_dict": ..., "learning_rate": lr}``, or the file's path, with ``lr`` in
        its metadata): TracIn reads the rate back when ``lrs=`` is not given."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.folder is None:
            item: Any = {"model_state_dict": state, "learning_rate": float(lr)}
        else:
            from safetensors.torch import save_file

            item = self.folder / f"checkpoint-{len(self.checkpoints):04d}.safetensors"
            save_file({k: v.contiguous() for k, v in state.items()}, str(item), metadata={"lr": repr(float(lr))})
        self.checkpoints.append(item)
        self.lrs.append(float(lr))
        return item

    def __len__(self) -> int:
        return len(self.checkpoints)


def tracin_features(model: nn.Module, checkpoints: Any, lrs: Any, x: torch.Tensor, y: torch.Tensor, *,
                    params: Any = "all", loss: Any = "auto", proj_dim: int | None = None,
                    projection: str = "rademacher", seed: int = 0, batch_size: Any = "auto") -> torch.Tensor:
    """``sqrt(lr_t) * P_t^T grad L(theta_t, z)`` per checkpoint, ``[T, n, k]``: TracIn scores are
    the sums over ``t`` of dot products of these (unprojected when ``proj_dim`` is ``None``)."""
    ckpts = load_checkpoints(model, checkpoints, lrs)
    out = []
    for t, ck in enumerate(ckpts):
        if ck.lr < 0:
            raise InputError(f"learning rate {ck.lr} of checkpoint {t} is negative")
        proj = Projector(proj_dim, projection, seed=int(seed) * 7919 + t)  # type: ignore[arg-type]
        out.append(projected_gradients(model, ck, x, y, proj, params=params, loss=loss, batch_size=batch_size,
                                       scale=float(ck.lr) ** 0.5))
    return torch.stack(out)


def tracin(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
           y_test: torch.Tensor, *, checkpoints: Any = None, lrs: Any = None, params: Any = "all",
           loss: Any = "auto", proj_dim: int | None = None, projection: Literal["rademacher", "gaussian"] = "rademacher",
           seed: int = 0, batch_size: Any = "auto", train_features: torch.Tensor | None = None,
           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], dict[str, float]]:
    """TracInCP scores ``[n_test, n_train]`` and the training rows' self-influence ``[n_train]``.

    ``checkpoints``: saved states (state dicts, ``.safetensors``/``.pt`` files or models; ``None``:
    the model as it is, one checkpoint); ``lrs``: one learning rate or one per checkpoint
    (default 1). Training rows are processed one checkpoint at a time, so memory holds one
    checkpoint's ``[n_train, k]`` features. ``train_features`` (``[T, n_train, k]`` from
    :func:`tracin_features` or a sharded run) skips recomputing them.
    """
    if proj_dim is not None and (isinstance(proj_dim, bool) or not isinstance(proj_dim, int) or proj_dim < 1):
        raise OptionError(f"proj_dim must be a positive int or None (no projection), got {proj_dim!r}")
    ckpts = load_checkpoints(model, checkpoints, lrs)
    t0 = time.perf_counter()
    scores = torch.zeros(len(x_test), len(x_train), dtype=torch.float64)
    selfi = torch.zeros(len(x_train), dtype=torch.float64)
    if train_features is not None and tuple(train_features.shape[:2]) != (len(ckpts), len(x_train)):
        raise InputError(f"train_features have shape {tuple(train_features.shape)}, expected "
                         f"[{len(ckpts)} checkpoints, {len(x_train)} rows, k]")
    for t, ck in enumerate(ckpts):
        if ck.lr < 0:
            raise InputError(f"learning rate {ck.lr} of checkpoint {t} is negative")
        proj = Projector(proj_dim, projection, seed=int(seed) * 7919 + t)
        scale = float(ck.lr) ** 0.5
        g_test = projected_gradients(model, ck, x_test, y_test, proj, params=params, loss=loss,
                                     batch_size=batch_size, scale=scale).double()
        if train_features is not None:
            g_train = train_features[t].double()
        else:
            g_train = projected_gradients(model, ck, x_train, y_train, proj, params=params, loss=loss,
                                          batch_size=batch_size, scale=scale).double()
        scores += g_test @ g_train.T
        selfi += (g_train * g_train).sum(dim=1)
    timings = {"tracin": time.perf_counter() - t0}
    config = {"n_checkpoints": len(ckpts), "lrs": [c.lr for c in ckpts], "params": params, "proj_dim": proj_dim,
              "projection": projection, "seed": int(seed)}
    dtype = torch.float64 if x_train.dtype == torch.float64 else torch.float32
    return scores.to(dtype), selfi.to(dtype), config, timings


def _estimator(prob: Problem, *, checkpoints: Any = None, lrs: Any = None, proj_dim: int | None = None,
               projection: Literal["rademacher", "gaussian"] = "rademacher", seed: int = 0,
               train_features: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    obj = prob.objective
    scores, _, used, timings = tracin(obj.module, prob.x_train, prob.y_train, prob.x_test, prob.y_test,
                                      checkpoints=checkpoints, lrs=lrs, params=obj.names, loss=obj.loss,
                                      proj_dim=proj_dim, projection=projection, seed=seed,
                                      batch_size=obj.batch_size, train_features=train_features)
    used.pop("params", None)
    return scores, {**used, "seconds_tracin": timings["tracin"]}


register_estimator("tracin", _estimator, options={"checkpoints": None, "lrs": None, "proj_dim": None,
                                                  "projection": "rademacher", "seed": 0, "train_features": None},
                   default_params="all",
                   description="TracInCP: learning-rate-weighted gradient dot products over checkpoints "
                               "(Pruthi et al. 2020)")
