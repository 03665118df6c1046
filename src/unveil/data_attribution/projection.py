"""Checkpoints, per-example gradients at a checkpoint, and seeded random projections.

The shared machinery of TracIn and TRAK (and of their dataset-scale runs in ``unveil.scale``):

* :func:`load_checkpoints` turns what the user saved (state dicts, ``.safetensors`` / ``.pt``
  files, or whole models) into parameter dicts, never changing the user's model: gradients are
  taken with ``torch.func.functional_call`` on those parameters.
* :func:`objective_at` is the training objective (per-example gradients with ``torch.func``, in
  bounded chunks) at a checkpoint's parameters; TRAK swaps the loss for :func:`neg_margins`.
* :class:`Projector` multiplies gradients by a ``[p, k]`` random matrix (Rademacher or Gaussian,
  scaled by ``1/sqrt(k)``) generated block by block from a seed, so the same seed gives the same
  matrix in any process and the matrix is never held whole when it would not fit the budget.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import InputError, OptionError
from .per_example import TrainingObjective

__all__ = [
    "Checkpoint",
    "Projector",
    "checkpoint_digest",
    "load_checkpoints",
    "margins",
    "neg_margins",
    "objective_at",
    "out_to_loss",
    "projected_gradients",
]

ParamChoice = Literal["all", "last"] | Sequence[str]


@dataclass
class Checkpoint:
    """One saved state of the model: its parameters and buffers, and the learning rate used
    from it (TracIn weights each checkpoint's gradient products by it)."""

    state: dict[str, torch.Tensor]
    lr: float = 1.0
    name: str = ""


_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _recorded_lr(meta: Any) -> float | None:
    for key in ("lr", "learning_rate"):
        v = meta.get(key) if isinstance(meta, dict) else None
        if v is not None:
            try:
                return float(v.item() if isinstance(v, torch.Tensor) else v)
            except (TypeError, ValueError):
                return None
    return None


def _state_of(item: Any) -> tuple[dict[str, torch.Tensor], str, float | None]:
    """A checkpoint's tensors, its name, and the learning rate saved with it (if any)."""
    if isinstance(item, nn.Module):
        return {k: v.detach() for k, v in item.state_dict().items()}, type(item).__name__, None
    if isinstance(item, dict):
        state: dict[str, Any] = item
        for key in ("model_state_dict", "state"):
            if isinstance(item.get(key), dict):
                state = item[key]
                break
        tensors = {k: torch.as_tensor(v).detach() for k, v in state.items() if isinstance(v, (torch.Tensor, np.ndarray))}
        return tensors, "state dict", _recorded_lr(item)
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise InputError(f"checkpoint {path} does not exist; pass saved state dicts, .safetensors or .pt files")
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            return dict(load_file(str(path))), path.name, _recorded_lr(meta)
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001  # a pickle of objects, or not a torch file at all
            raise InputError(f"{path} cannot be read as a state dict without unpickling objects ({exc}); save "
                             "model.state_dict() with torch.save or safetensors") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{path} does not hold a state dict (found {type(loaded).__name__})")
        state, name, lr = _state_of(loaded)
        return state, path.name, lr
    raise InputError(f"a checkpoint must be a state dict, a .safetensors/.pt path or a model, got {type(item).__name__}")


def _items(checkpoints: Any, model: nn.Module) -> list[Any]:
    if checkpoints is None:
        return [model]
    if isinstance(checkpoints, (str, Path)) and Path(checkpoints).is_dir():
        files = sorted(p for p in Path(checkpoints).iterdir() if p.suffix in _SUFFIXES)
        if not files:
            raise InputError(f"the folder {checkpoints} holds no checkpoint files ({', '.join(_SUFFIXES)})")
        return files
    if isinstance(checkpoints, (list, tuple)):
        return list(checkpoints)
    return [checkpoints]


def load_checkpoints(model: nn.Module, checkpoints: Any = None, lrs: Any = None) -> list[Checkpoint]:
    """The checkpoints as :class:`Checkpoint` objects (``None``: the model as it is now).

    ``checkpoints``: models, state dicts (also Captum's ``{"model_state_dict"|"state": ...,
    "learning_rate"|"lr": ...}`` form), ``.safetensors``/``.pt`` files, or a folder of them (in
    name order). ``lrs`` is one learning rate for all, or one per checkpoint; without it each
    checkpoint's saved learning rate is used (as :class:`~unveil.data_attribution.tracin.
    CheckpointRecorder` saves it), else 1. Every checkpoint must hold the model's parameter
    names with the same shapes.
    """
    items = _items(checkpoints, model)
    if not items:
        raise InputError("checkpoints is empty; pass at least one saved state of the model")
    rates: list[float | None]
    if lrs is None:
        rates = [None] * len(items)
    elif isinstance(lrs, (int, float)) and not isinstance(lrs, bool):
        rates = [float(lrs)] * len(items)
    else:
        try:
            rates = [float(r) for r in lrs]
        except (TypeError, ValueError):
            raise InputError(f"lrs must be a number or one number per checkpoint, got {lrs!r}") from None
        if len(rates) != len(items):
            raise InputError(f"got {len(rates)} learning rates for {len(items)} checkpoints; pass one per checkpoint")
    own = dict(model.named_parameters())
    out = []
    for i, (item, given) in enumerate(zip(items, rates, strict=True)):
        state, name, saved = _state_of(item)
        for k, p in own.items():
            if k not in state:
                raise InputError(f"checkpoint {i} ({name}) has no parameter {k!r}; it must be a state of this model")
            if tuple(state[k].shape) != tuple(p.shape):
                raise InputError(f"checkpoint {i} ({name}): {k!r} has shape {tuple(state[k].shape)}, the model's "
                                 f"is {tuple(p.shape)}")
        lr = given if given is not None else saved if saved is not None else 1.0
        if not math.isfinite(lr):
            raise InputError(f"learning rate {lr} of checkpoint {i} is not finite")
        out.append(Checkpoint(state, lr, name))
    return out


def checkpoint_digest(ck: Checkpoint) -> str:
    """A BLAKE2b digest of a checkpoint's tensors and learning rate (to tell states apart)."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(ck.state):
        v = ck.state[k].detach().cpu().contiguous()
        h.update(f"{k}{v.dtype}{tuple(v.shape)}".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr(float(ck.lr)).encode())
    return h.hexdigest()


def objective_at(model: nn.Module, ckpt: Checkpoint, x_probe: torch.Tensor, y_probe: torch.Tensor, *,
                 params: ParamChoice = "all", loss: Any = "auto", batch_size: Any = "auto",
                 ) -> tuple[TrainingObjective, torch.Tensor]:
    """The training objective at checkpoint ``ckpt`` and its flat chosen parameters ``theta``.

    The parameters not chosen and the buffers are the checkpoint's too; the model's own
    parameters are never read or changed.
    """
    obj = TrainingObjective.build(model, x_probe, y_probe, params=params, loss=loss, batch_size=batch_size)
    dtype = obj.theta0().dtype
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt.state.items()}
    obj.fixed = {k: state.get(k, v) for k, v in obj.fixed.items()}
    theta = torch.cat([state[n].reshape(-1) for n in obj.names]).clone()
    return obj, theta


def _is_class(y: torch.Tensor) -> bool:
    return not y.is_floating_point()


def margins(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TRAK's model output function per row, ``[b]``.

    Multi-class logits: ``f = z_y - logsumexp_{j != y} z_j`` (the loss is ``log(1 + exp(-f))``).
    One logit with 0/1 targets: ``f = (2y - 1) z``, the same relation. Regression: ``f`` is minus
    the row's loss (so ``-dL/df = 1``).
    """
    if _is_class(y) and out.ndim == 2 and out.shape[1] > 1:
        # a comparison, not one_hot: one_hot reads the largest label (.item()), which vmap
        # cannot do, and the per-example gradients would fall back to a loop over rows
        mask = torch.arange(out.shape[1], device=out.device) == y.long().reshape(-1, 1)
        correct = out.masked_fill(~mask, 0.0).sum(dim=1)
        others = torch.logsumexp(out.masked_fill(mask, float("-inf")), dim=1)
        return correct - others
    if _is_class(y):
        return (2.0 * y.to(out.dtype).reshape(-1) - 1.0) * out.reshape(-1)
    out2 = out.reshape(out.shape[0], -1)
    return -((out2 - y.to(out.dtype).reshape(out2.shape)) ** 2).mean(dim=1)


def out_to_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TRAK's out-to-loss weights ``Q = -dL/df`` per row: ``1 - p(correct) = sigmoid(-f)`` for
    classification, 1 for regression."""
    if _is_class(y):
        return torch.sigmoid(-margins(out, y))
    return torch.ones(out.shape[0], dtype=out.dtype)


def neg_margins(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-f`` per row: a "loss" whose per-example gradients are ``-grad f`` (TRAK's features up
    to a sign that cancels in every score)."""
    return -margins(out, y)


def _block_seed(seed: int, block: int) -> int:
    digest = hashlib.blake2b(f"unveil-projection/{seed}/{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class Projector:
    """A seeded random projection ``R^p -> R^k``: ``g @ P / sqrt(k)`` with ``P`` Rademacher
    (random signs) or standard Gaussian.

    ``P`` is generated in blocks of ``block`` parameter rows, each from its own seed derived from
    ``seed``, so any process regenerates the same matrix. When ``p * k`` floats fit
    ``max_bytes`` the blocks are kept (generated once); otherwise each call regenerates them, and
    memory stays at one block. ``dim=None`` is the identity (no projection).
    """

    dim: int | None = 512
    kind: Literal["rademacher", "gaussian"] = "rademacher"
    seed: int = 0
    block: int = 8192
    max_bytes: int = 256 << 20
    _cache: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("rademacher", "gaussian"):
            raise OptionError(f"projection must be 'rademacher' or 'gaussian', got {self.kind!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise OptionError(f"proj_dim must be a positive int or None, got {self.dim!r}")

    def _block(self, b: int, rows: int, dtype: torch.dtype) -> torch.Tensor:
        assert self.dim is not None
        gen = torch.Generator().manual_seed(_block_seed(self.seed, b))
        if self.kind == "gaussian":
            m = torch.randn(rows, self.dim, generator=gen, dtype=dtype)
        else:
            m = torch.randint(0, 2, (rows, self.dim), generator=gen).to(dtype).mul_(2).sub_(1)
        return m

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """Project ``g`` of shape ``[n, p]`` to ``[n, k]``."""
        if self.dim is None:
            return g
        n, p = g.shape
        keep = p * self.dim * g.element_size() <= self.max_bytes
        out = torch.zeros(n, self.dim, dtype=g.dtype)
        for b, a in enumerate(range(0, p, self.block)):
            rows = min(self.block, p - a)
            key = (b, rows)
            m = self._cache.get(key) if keep else None
            if m is None or m.dtype != g.dtype:
                m = self._block(b, rows, g.dtype)
                if keep:
                    self._cache[key] = m
            out.addmm_(g[:, a:a + rows], m)
        return out / math.sqrt(self.dim)

    def config(self) -> dict[str, Any]:
        """What defines the matrix (for manifests and results)."""
        return {"proj_dim": self.dim, "projection": self.kind, "seed": self.seed, "block": self.block}


def projected_gradients(model: nn.Module, ckpt: Checkpoint, x: torch.Tensor, y: torch.Tensor, projector: Projector,
                        *, params: ParamChoice = "all", loss: Any = "auto", batch_size: Any = "auto",
                        scale: float = 1.0) -> torch.Tensor:
    """``scale * P^T grad`` of every row's loss at ``ckpt``, ``[n, k]`` (``[n, p]`` unprojected),
    computed chunk by chunk so only one chunk's full gradients exist at a time."""
    obj, theta = objective_at(model, ckpt, x[:1], y[:1], params=params, loss=loss, batch_size=batch_size)
    k = projector.dim or obj.size
    out = obj.map_gradients(theta, x, y, lambda a, b, g: projector(g) * scale,
                            extra_per_row=k * theta.element_size())
    assert out is not None
    return out


def row_outputs(model: nn.Module, ckpt: Checkpoint, x: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """The model's outputs at ``ckpt`` on ``x`` (no gradients), chunked."""
    from torch.func import functional_call

    state = dict(ckpt.state)
    with torch.no_grad():
        outs = []
        for a in range(0, len(x), chunk):
            xb = x[a:a + chunk]
            dtype = next(v for v in state.values() if v.is_floating_point()).dtype
            outs.append(functional_call(model, state, (xb.to(dtype) if xb.is_floating_point() else xb,)))
    return torch.cat(outs)
