"""Representer points (Yeh et al. 2018) for the last layer.

At a stationary point of ``(1/n) sum_i loss_i + (l2/2) ||W||^2`` for the last linear layer
``Phi = W f`` (``f`` its input features, a constant 1 appended for the bias), the weights are
``W = sum_i alpha_i f_i^T`` with ``alpha_i = -(1/(l2 n)) d loss_i / d Phi_i``, so every
pre-activation output splits into one term per training row:
``Phi(x_t) = sum_i alpha_i (f_i . f_t)``. The score of row ``i`` for test row ``t`` is its term
for the test row's target class (classification; for one logit, the logit signed towards the
target), or, for other losses, the term projected on the direction that lowers the test loss,
``-(d loss_t / d Phi_t) . alpha_i (f_i . f_t)``. Positive = proponent, as for every estimator.

The decomposition is exact only when the last layer was trained with that L2 penalty to a
stationary point; pass the ``l2`` used in training to :func:`training_influence` (without one,
1e-3 is used: the ranking does not depend on ``l2``, only the scale of the scores does).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import grad, vmap

from ..core.hooks import forward_hooks
from ..errors import OptionError
from .estimators import Problem, register_estimator

__all__ = ["representer_scores"]

_DEFAULT_L2 = 1e-3


def _features(prob: Problem, layer: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last layer's input features (bias column appended) and the model's outputs."""
    feats: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        feats.append(args[0].detach().reshape(args[0].shape[0], -1))

    obj = prob.objective
    outs = []
    for a, b in obj.each_chunk(int(x.shape[0])):
        with torch.no_grad(), forward_hooks([(layer, hook)]):
            outs.append(obj.outputs(prob.theta, x[a:b]).detach())
    f = torch.cat(feats)
    out = torch.cat(outs)
    if layer.bias is not None:
        f = torch.cat([f, torch.ones(f.shape[0], 1, dtype=f.dtype)], dim=1)
    return f, out.reshape(out.shape[0], -1)


def _last_linear(module: nn.Module) -> nn.Linear:
    last = None
    for sub in module.modules():
        if list(sub.parameters(recurse=False)):
            last = sub
    if not isinstance(last, nn.Linear):
        raise OptionError(
            "method='representer' needs a model whose last layer with parameters is an nn.Linear "
            f"producing the scores, got {type(last).__name__}; use method='influence' with params='last'"
        )
    return last


def representer_scores(prob: Problem) -> tuple[torch.Tensor, dict[str, Any]]:
    """The ``"representer"`` estimator, ``[n_test, n_train]``."""
    lam = prob.objective.l2 if prob.objective.l2 > 0 else _DEFAULT_L2
    layer = _last_linear(prob.objective.module)
    f_tr, out_tr = _features(prob, layer, prob.x_train)
    f_te, out_te = _features(prob, layer, prob.x_test)
    if out_tr.shape[1] != layer.out_features:
        raise OptionError(
            f"method='representer' needs the last nn.Linear ({layer.out_features} outputs) to give the "
            f"model's scores, but the model returns {out_tr.shape[1]} columns"
        )
    loss = prob.objective.loss

    def row_grad(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = grad(lambda oo: loss(oo.unsqueeze(0), y.unsqueeze(0)).sum())(o)
        return out

    d_tr = vmap(row_grad)(out_tr, prob.y_train)  # [n, C]
    alpha = -d_tr / (lam * prob.n_train)
    k = f_te @ f_tr.T  # [n_test, n_train]
    name = prob.objective.loss_name
    if name == "cross_entropy":
        scores = alpha.T[prob.y_test.long()] * k
    elif name == "binary_cross_entropy":
        sign = (2.0 * prob.y_test.to(k.dtype) - 1.0)[:, None]
        scores = sign * alpha[:, 0][None, :] * k
    else:
        d_te = vmap(row_grad)(out_te, prob.y_test)  # [n_test, C]
        scores = -(d_te @ alpha.T) * k
    return scores, {"l2_representer": lam, "layer_features": int(f_tr.shape[1])}


register_estimator("representer", representer_scores, options={}, default_params="last",
                   description="representer points of the last linear layer (Yeh et al. 2018)")
