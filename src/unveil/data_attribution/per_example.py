"""Per-example gradients of the training loss, with ``torch.func``, in bounded-memory chunks.

Everything the estimators need is a function of a flat vector ``theta`` of the *chosen*
parameters (all of them, or the last layer's) with the other parameters and buffers held fixed:
the per-row loss, its per-example gradients (``vmap(grad(...))`` over the rows of a chunk), the
Hessian of the training objective and Hessian-vector products. :class:`TrainingObjective`
bundles them.

The training objective is ``(1/n) sum_i w_i loss_i(theta) + (l2/2) ||theta||^2`` (``w_i = 1``
unless a row is re-weighted), where ``loss_i`` is

* cross-entropy of the logits for classification (integer targets; a single-logit output is
  read as binary logistic regression, targets 0/1),
* the mean squared error over the output's columns for regression (float targets),
* or ``loss_fn(outputs, targets)`` returning one loss per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from ..core.batching import BatchSize, block_size, resolve_batch_size, run_chunked
from ..errors import InputError, NotDifferentiableError, OptionError, TargetError

__all__ = [
    "LossFn",
    "TrainingObjective",
    "choose_parameters",
    "per_example_gradients",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_FORWARD_AD_READY = False


def _load_forward_ad() -> None:
    """Load torch's forward-mode decompositions once, hiding the DeprecationWarning that torch
    itself raises then (``torch.jit.script``), which a warnings-as-errors setup would turn
    into a failure of the first Hessian-vector product."""
    global _FORWARD_AD_READY
    if _FORWARD_AD_READY:
        return
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
        one = torch.ones(1)
        jvp(torch.sin, (one,), (one,))
    _FORWARD_AD_READY = True


def choose_parameters(module: nn.Module, params: str | Sequence[str]) -> list[str]:
    """Names of the parameters to attribute through: ``"all"``, ``"last"`` (the parameters of
    the last submodule that has any, in registration order) or an explicit list of names."""
    named = dict(module.named_parameters())
    if not named:
        raise NotDifferentiableError(
            f"the model ({type(module).__name__}) has no parameters, so no training example can "
            "have influenced it through gradients; data attribution needs a trained torch model"
        )
    if params == "all":
        return list(named)
    if params == "last":
        last: list[str] = []
        for prefix, sub in module.named_modules():
            own = [f"{prefix}.{n}" if prefix else n for n, _ in sub.named_parameters(recurse=False)]
            if own:
                last = own
        return last
    if isinstance(params, str) or not all(isinstance(p, str) for p in params):
        raise OptionError(f"params must be 'all', 'last' or a list of parameter names, got {params!r}")
    missing = [p for p in params if p not in named]
    if missing or not params:
        raise OptionError(
            f"params names no parameter of the model: {missing or '[]'}; the model's parameters are "
            f"{list(named)[:12]}{' ...' if len(named) > 12 else ''}"
        )
    return list(params)


def _resolve_loss(loss: str | LossFn, targets: torch.Tensor, n_out: int) -> tuple[str, LossFn]:
    if callable(loss):
        return getattr(loss, "__name__", "loss_fn"), loss
    if loss == "auto":
        loss = "cross_entropy" if not targets.is_floating_point() else "mse"
    if loss == "cross_entropy":
        if n_out == 1:
            return "binary_cross_entropy", _bce
        return "cross_entropy", _cross_entropy
    if loss == "mse":
        return "mse", _mse
    raise OptionError(f"loss must be 'auto', 'cross_entropy', 'mse' or a callable, got {loss!r}")


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y.long(), reduction="none")


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out.reshape(-1), y.to(out.dtype).reshape(-1), reduction="none")


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out2 = out.reshape(out.shape[0], -1)
    return ((out2 - y.to(out.dtype).reshape(out2.shape)) ** 2).mean(dim=1)


@dataclass
class TrainingObjective:
    """The training loss as a function of the flat chosen parameters ``theta``.

    ``module`` is never modified: every evaluation goes through ``functional_call`` with the
    parameters given explicitly (the chosen ones from ``theta``, the rest as they are).
    """

    module: nn.Module
    names: list[str]
    shapes: list[torch.Size]
    fixed: dict[str, torch.Tensor]
    loss: LossFn
    loss_name: str
    l2: float = 0.0
    batch_size: BatchSize = "auto"

    @classmethod
    def build(cls, module: nn.Module, x_probe: torch.Tensor, y_probe: torch.Tensor, *,
              params: str | Sequence[str] = "all", loss: str | LossFn = "auto", l2: float = 0.0,
              batch_size: BatchSize = "auto") -> TrainingObjective:
        """The objective of ``module`` on rows like ``x_probe`` with targets like ``y_probe``."""
        if not isinstance(module, nn.Module):
            raise NotDifferentiableError(
                f"data attribution needs a torch.nn.Module (gradients with respect to its "
                f"parameters), got {type(module).__name__}; wrap a scikit-learn model's "
                "coefficients in an nn.Linear, or pass the torch model itself"
            )
        if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
            raise OptionError(f"l2 must be a finite number >= 0 (the training's L2 penalty), got {l2!r}")
        resolve_batch_size(batch_size)
        _load_forward_ad()
        names = choose_parameters(module, params)
        state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        fixed = {k: v.detach() for k, v in state.items() if k not in names}
        shapes = [state[n].shape for n in names]
        with torch.no_grad():
            out = functional_call(module, {k: v.detach() for k, v in state.items()}, (x_probe,))
        if not isinstance(out, torch.Tensor):
            raise InputError(f"the model must return a tensor of scores, got {type(out).__name__}")
        n_out = int(out[0].numel()) if out.ndim > 0 and out.shape[0] > 0 else 1
        name, fn = _resolve_loss(loss, y_probe, n_out)
        if name == "cross_entropy":
            if y_probe.is_floating_point():
                raise TargetError("classification targets must be integer class indices, got floats; "
                                  "pass loss='mse' for regression")
        obj = cls(module, names, shapes, fixed, fn, name, float(l2), batch_size)
        return obj

    # -- parameters -----------------------------------------------------------------------
    @property
    def size(self) -> int:
        """The number of chosen parameters (the length of ``theta``)."""
        return sum(math.prod(s) for s in self.shapes)

    def theta0(self) -> torch.Tensor:
        """The model's current chosen parameters, flat (a detached copy)."""
        named = dict(self.module.named_parameters())
        return torch.cat([named[n].detach().reshape(-1) for n in self.names]).clone()

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``theta`` as ``{name: tensor}`` of the chosen parameters plus the fixed ones."""
        out = dict(self.fixed)
        i = 0
        for n, s in zip(self.names, self.shapes):
            k = math.prod(s)
            out[n] = theta[i:i + k].reshape(s)
            i += k
        return out

    # -- losses and derivatives -------------------------------------------------------------
    def outputs(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs on a batch ``x`` with the chosen parameters set to ``theta``."""
        out = functional_call(self.module, self.unflatten(theta), (x,))
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(out)

    def row_losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of each row of the batch, shape ``[b]``."""
        return self.loss(self.outputs(theta, x), y).reshape(-1)

    def _one_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.row_losses(theta, x.unsqueeze(0), y.unsqueeze(0)).sum()

    def gradients(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example gradients of the loss, ``[b, P]`` (``vmap(grad)``; a loop over rows when
        the model cannot be vmapped, e.g. data-dependent control flow)."""
        g = grad(self._one_loss)
        try:
            out: torch.Tensor = vmap(g, in_dims=(None, 0, 0))(theta, x, y)
            return out
        except (RuntimeError, NotImplementedError, ValueError):
            return torch.stack([g(theta, x[i], y[i]) for i in range(x.shape[0])])

    def weighted_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      w: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_i w_i loss_i`` over the batch (no 1/n, no penalty)."""
        losses = self.row_losses(theta, x, y)
        return losses.sum() if w is None else (w.to(losses.dtype) * losses).sum()

    def hvp(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``(sum_i d^2 loss_i / d theta^2) v`` over the batch (forward-over-reverse)."""
        out: torch.Tensor = jvp(lambda t: grad(self.weighted_loss)(t, x, y), (theta,), (v,))[1]
        return out

    def chunk_rows(self, total: int, extra_per_row: int = 0) -> int:
        """Rows per chunk so that the chunk's ``[rows, P]`` gradients (plus ``extra_per_row``
        bytes each) stay within a share of the memory budget."""
        item = torch.empty((), dtype=self.theta0().dtype).element_size()
        size = block_size(4 * self.size * item + extra_per_row, total, what="one row's gradient",
                          batch_size=self.batch_size)
        if isinstance(self.batch_size, int):
            size = min(size, self.batch_size)
        return size

    def each_chunk(self, total: int, extra_per_row: int = 0) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` chunks of ``range(total)`` sized by :meth:`chunk_rows`."""
        size = self.chunk_rows(total, extra_per_row)
        for a in range(0, total, size):
            yield a, min(a + size, total)

    def map_gradients(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      fn: Callable[[int, int, torch.Tensor], torch.Tensor | None],
                      *, extra_per_row: int = 0) -> torch.Tensor | None:
        """Call ``fn(start, stop, grads)`` on the per-example gradients of each chunk of rows
        and concatenate what it returns (the gradients of all rows never exist at once)."""
        total = int(x.shape[0])
        size = self.chunk_rows(total, extra_per_row)
        return run_chunked(lambda a, b: self.gradients(theta, x[a:b], y[a:b]), total,
                           consume=fn, batch_size=size)


def per_example_gradients(model: nn.Module, inputs: Any, targets: Any, *,
                          params: str | Sequence[str] = "all", loss: str | LossFn = "auto",
                          batch_size: BatchSize = "auto") -> torch.Tensor:
    """The gradient of each row's loss with respect to the chosen parameters, ``[n, P]``.

    ``params`` is ``"all"``, ``"last"`` or a list of parameter names; the flat order is the
    order of those names. The model is evaluated in eval mode and left unchanged.
    """
    from ._inputs import check_rows  # local: _inputs imports this module

    x, y = check_rows(inputs, targets, what="inputs")
    if not isinstance(model, nn.Module):
        raise NotDifferentiableError(f"per-example gradients need a torch.nn.Module, got {type(model).__name__}")
    from ..core.hooks import model_guard

    with model_guard(model):
        obj = TrainingObjective.build(model, x[:1], y[:1], params=params, loss=loss, batch_size=batch_size)
        theta = obj.theta0()
        out = obj.map_gradients(theta, x, y, lambda a, b, g: g.detach())
    assert out is not None
    return out
