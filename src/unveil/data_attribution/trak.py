"""TRAK: attributing predictions to training data with random projections of gradients
(Park, Georgiev, Ilyas, Leclerc and Madry, ICML 2023).

For each model ``s`` of an ensemble (independently trained models, or checkpoints of one run):

* ``phi_s(z) = P_s^T grad_theta f(z; theta_s)``: the gradient of the model output function
  ``f`` (the margin ``z_y - logsumexp_{j != y} z_j`` for classification, see
  :func:`~unveil.data_attribution.projection.margins`) projected to ``k`` dimensions by a seeded
  random matrix ``P_s`` (Rademacher or Gaussian);
* ``Phi_s`` stacks the training rows' features; ``Q_s = diag(1 - p_i)`` (``-dL/df``, the
  out-to-loss term);

and the scores are ``tau(z) = mean_s(Q_s) * mean_s(phi_s(z)^T (Phi_s^T Phi_s + lambda I)^{-1} Phi_s^T)``
(the paper's Algorithm 1; the two averages are taken separately as there). ``lambda`` is
``damping`` times the mean diagonal of ``Phi_s^T Phi_s`` (default 0.1: on a digits MLP it gave
a higher LDS than 0.01 or 1.0 for both one model and ten). A positive score means adding the
training row raises the test row's margin, i.e. lowers its loss: a proponent, the sign convention of
:class:`~unveil.data_attribution.TrainingAttribution`.

Memory: one model's ``[n_train, k]`` features, the ``[k, k]`` kernel and the ``[n_test, n_train]``
scores at a time; gradients exist one chunk of rows at a time. For training sets beyond that,
:func:`unveil.scale.training_features` computes the features in resumable shards and
:func:`trak` takes them as ``train_features=``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InputError, OptionError
from .estimators import Problem, register_estimator
from .per_example import choose_parameters
from .projection import (
    Checkpoint,
    Projector,
    checkpoint_digest,
    load_checkpoints,
    neg_margins,
    out_to_loss,
    projected_gradients,
    row_outputs,
)

__all__ = ["TrakFeatures", "trak", "trak_features", "trak_scores"]


@dataclass
class TrakFeatures:
    """Projected training features of every model of the ensemble: ``phi [S, n, k]`` and
    out-to-loss weights ``q [S, n]``, with the projection settings that made them."""

    phi: torch.Tensor
    q: torch.Tensor
    config: dict[str, Any]


def model_projector(proj_dim: int | None, projection: str, seed: int, s: int) -> Projector:
    """The projection of model ``s``: its own seed, derived from ``seed`` and ``s``."""
    return Projector(proj_dim, projection, seed=int(seed) * 7919 + s)  # type: ignore[arg-type]


def trak_features(model: nn.Module, ckpt: Checkpoint, s: int, x: torch.Tensor, y: torch.Tensor, *,
                  proj_dim: int | None = 512, projection: str = "rademacher", seed: int = 0,
                  params: Any = "all", batch_size: Any = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi [n, k], q [n])`` of rows ``x, y`` under model ``s`` (checkpoint ``ckpt``)."""
    proj = model_projector(proj_dim, projection, seed, s)
    phi = projected_gradients(model, ckpt, x, y, proj, params=params, loss=neg_margins, batch_size=batch_size)
    q = out_to_loss(row_outputs(model, ckpt, x), y)
    return phi, q.to(phi.dtype)


def _solve(phi: torch.Tensor, damping: float) -> torch.Tensor:
    """``(Phi^T Phi + lambda I)^{-1}`` in float64, ``lambda = damping * mean diag``."""
    k = phi.double().T @ phi.double()
    lam = damping * float(torch.diagonal(k).mean()) if damping > 0 else 0.0
    k = k + lam * torch.eye(k.shape[0], dtype=k.dtype)
    inv: torch.Tensor = torch.linalg.pinv(k, hermitian=True)
    return inv


def trak_scores(test_phi: Sequence[torch.Tensor], train_phi: Sequence[torch.Tensor], train_q: Sequence[torch.Tensor],
                damping: float = 0.0) -> torch.Tensor:
    """The ensemble's scores ``[n_test, n_train]`` from per-model test and training features."""
    total: torch.Tensor | None = None
    for t, phi in zip(test_phi, train_phi, strict=True):
        s = (t.double() @ _solve(phi, damping)) @ phi.double().T
        total = s if total is None else total + s
    assert total is not None
    qbar = torch.stack([q.double() for q in train_q]).mean(dim=0)
    return (total / len(test_phi)) * qbar.unsqueeze(0)


def _check(proj_dim: Any, damping: Any, projection: Any) -> None:
    if proj_dim is not None and (isinstance(proj_dim, bool) or not isinstance(proj_dim, int) or proj_dim < 1):
        raise OptionError(f"proj_dim must be a positive int (the projected dimension k) or None, got {proj_dim!r}")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
        raise OptionError(f"damping must be a number >= 0 (relative to the kernel's mean diagonal), got {damping!r}")
    if projection not in ("rademacher", "gaussian"):
        raise OptionError(f"projection must be 'rademacher' or 'gaussian', got {projection!r}")


def trak(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
         y_test: torch.Tensor, *, checkpoints: Any = None, proj_dim: int | None = 512,
         projection: Literal["rademacher", "gaussian"] = "rademacher", damping: float = 0.1, seed: int = 0,
         params: Any = "all", batch_size: Any = "auto", train_features: TrakFeatures | None = None,
         ) -> tuple[torch.Tensor, dict[str, Any], dict[str, float]]:
    """TRAK scores ``[n_test, n_train]`` of an ensemble, with the parameters used and timings.

    ``checkpoints``: the ensemble, as models, state dicts or saved files of the same
    architecture as ``model`` (``None``: ``model`` alone, TRAK-1). ``train_features``: the
    training rows' features computed before (e.g. by :func:`unveil.scale.training_features`) with
    the same settings; they are checked against ``proj_dim``, ``projection``, ``seed`` and
    ``params``, and ``x_train`` is then only used for its length.
    """
    _check(proj_dim, damping, projection)
    ckpts = load_checkpoints(model, checkpoints)
    params = choose_parameters(model, params)
    config = {"proj_dim": proj_dim, "projection": projection, "seed": int(seed), "params": params,
              "n_models": len(ckpts)}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if train_features is not None:
        if "checkpoints" in train_features.config:  # the models' states too, when the features name them
            config["checkpoints"] = [checkpoint_digest(c) for c in ckpts]
        theirs = {k: train_features.config.get(k) for k in config}
        if theirs != config:
            raise InputError(f"train_features were computed with {theirs}, this call asks for {config}; "
                             "compute them again with the same settings")
        if train_features.phi.shape[1] != len(x_train):
            raise InputError(f"train_features hold {train_features.phi.shape[1]} rows, the training set has "
                             f"{len(x_train)}")
    total: torch.Tensor | None = None
    qs = []
    for s, ck in enumerate(ckpts):
        if train_features is not None:
            phi, q = train_features.phi[s], train_features.q[s]
        else:
            phi, q = trak_features(model, ck, s, x_train, y_train, proj_dim=proj_dim, projection=projection,
                                   seed=seed, params=params, batch_size=batch_size)
        t, _ = trak_features(model, ck, s, x_test, y_test, proj_dim=proj_dim, projection=projection, seed=seed,
                             params=params, batch_size=batch_size)
        part = trak_scores([t], [phi], [torch.ones_like(q)], damping)
        total = part if total is None else total + part
        qs.append(q.double())
    assert total is not None
    scores = (total / len(ckpts)) * torch.stack(qs).mean(dim=0).unsqueeze(0)
    timings["trak"] = time.perf_counter() - t0
    params_out = {**{k: v for k, v in config.items() if k != "checkpoints"}, "damping": float(damping)}
    if not bool(torch.isfinite(scores).all()):
        raise InputError("TRAK produced non-finite scores (gradients overflowed); check the model's outputs")
    return scores.to(torch.float32 if x_train.dtype != torch.float64 else torch.float64), params_out, timings


def _estimator(prob: Problem, *, checkpoints: Any = None, proj_dim: int | None = 512,
               projection: Literal["rademacher", "gaussian"] = "rademacher", damping: float = 0.1, seed: int = 0,
               train_features: TrakFeatures | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    obj = prob.objective
    scores, used, timings = trak(obj.module, prob.x_train, prob.y_train, prob.x_test, prob.y_test,
                                 checkpoints=checkpoints, proj_dim=proj_dim, projection=projection, damping=damping,
                                 seed=seed, params=obj.names, batch_size=obj.batch_size, train_features=train_features)
    used.pop("params", None)
    return scores, {**used, "seconds_trak": timings["trak"]}


register_estimator("trak", _estimator, options={"checkpoints": None, "proj_dim": 512, "projection": "rademacher",
                                                "damping": 0.1, "seed": 0, "train_features": None},
                   default_params="all",
                   description="TRAK: projected gradients of an ensemble of models (Park et al. 2023)")
