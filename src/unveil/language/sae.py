"""Sparse autoencoders (SAEs) on a layer's activations, their quality figures, and feature attribution.

An SAE rewrites an activation ``x`` (d numbers) as a sparse non-negative code ``f`` over many
features, ``f = ReLU(W_enc (x - b_dec) + b_enc)``, ``x_hat = f W_dec + b_dec`` (Bricken et al.,
2023, "Towards monosemanticity"). Sparsity comes from an L1 penalty on ``f`` weighted by the
decoder rows' norms, or from keeping only the ``k`` largest pre-activations (top-k; Gao et al.,
2024, "Scaling and evaluating sparse autoencoders").

Quality figures:

* ``l0``: mean number of active features per token (``f > 0``).
* ``explained_variance = 1 - Var(x - x_hat) / Var(x)``, variances summed over dimensions, taken
  over tokens.
* the cross-entropy loss score of an LM layer's SAE, ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``:
  1 when splicing the reconstruction in costs no next-token loss, 0 when it is as bad as zeroing
  the layer's output.

The first half of this module (:class:`SparseAutoencoder`, :func:`train_sae`, :func:`sae_metrics`)
works on any ``(N, d)`` activations; the second half reads them from a causal LM's residual stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from ..core.hooks import frozen_parameters
from ..errors import InputError, OptionError
from ._residual import DecoderParts, capture, encode, find_parts
from .heads import token_id

__all__ = ["CEScore", "FeatureAttribution", "SparseAutoencoder", "explained_variance", "feature_attribution",
           "layer_activations", "mean_l0", "sae_ce_score", "sae_metrics", "train_sae"]


class SparseAutoencoder(nn.Module):
    """``f = ReLU(W_enc (x - b_dec) + b_enc)`` (top-``k`` of it if ``k``), ``x_hat = f W_dec + b_dec``.

    Shapes: ``W_enc`` (d_in, n_features), ``W_dec`` (n_features, d_in).
    """

    def __init__(self, d_in: int, n_features: int, *, k: int | None = None) -> None:
        super().__init__()
        if k is not None and not 1 <= k <= n_features:
            raise OptionError(f"k={k!r} must be between 1 and n_features={n_features}")
        self.k = k
        self.W_enc = nn.Parameter(torch.zeros(d_in, n_features))
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.W_dec = nn.Parameter(torch.zeros(n_features, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations (..., n_features), non-negative and sparse."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        f = F.relu(pre)
        if self.k is not None and self.k < f.shape[-1]:
            top = f.topk(self.k, dim=-1)
            f = torch.zeros_like(f).scatter(-1, top.indices, top.values)
        return f

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """The reconstruction (..., d_in) of feature activations."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _acts(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x).float()
    if t.ndim < 2 or t.shape[0] < 2:
        raise InputError(f"activations must be shaped (N, d) with N >= 2 rows, got {tuple(t.shape)}")
    return t.reshape(-1, t.shape[-1])


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 - Var(x - x_hat) / Var(x)`` over rows, each variance summed over dimensions."""
    x, x_hat = x.reshape(-1, x.shape[-1]).double(), x_hat.reshape(-1, x.shape[-1]).double()
    total = x.var(0, unbiased=False).sum()
    return float(1 - (x - x_hat).var(0, unbiased=False).sum() / total)


def mean_l0(f: torch.Tensor) -> float:
    """Mean number of active (non-zero) features per row."""
    return float((f != 0).reshape(-1, f.shape[-1]).sum(-1).double().mean())


def sae_metrics(sae: SparseAutoencoder, x: Any) -> dict[str, float]:
    """``l0``, ``explained_variance`` and ``mse`` of ``sae`` on activations (N, d)."""
    t = _acts(x)
    with torch.no_grad():
        f = sae.encode(t)
        x_hat = sae.decode(f)
    return {"l0": mean_l0(f), "explained_variance": explained_variance(t, x_hat),
            "mse": float((t - x_hat).pow(2).mean())}


def train_sae(x: Any, *, n_features: int, k: int | None = None, l1: float = 0.1, steps: int = 1000,
              lr: float = 1e-3, batch_size: int = 256, seed: int = 0) -> SparseAutoencoder:
    """Fit an SAE to activations ``x`` (N, d) with Adam on MSE (+ ``l1`` penalty unless ``k``).

    ``k`` chooses a top-k SAE (no L1); otherwise the penalty is ``l1 * sum_i f_i ||W_dec,i||``.
    Both terms are scale-free: the squared error is divided by ``sum Var(x)`` and the penalty by
    its square root, so ``l1`` means the same for activations of any size.
    Decoder rows are kept at unit norm. The random state of the caller is left alone.
    """
    t = _acts(x)
    if not isinstance(n_features, int) or n_features < 1:
        raise OptionError(f"n_features must be a positive integer, got {n_features!r}")
    if not isinstance(steps, int) or steps < 1:
        raise OptionError(f"steps must be a positive integer, got {steps!r}")
    d = t.shape[1]
    with torch.random.fork_rng(devices=[]), torch.enable_grad(), torch.inference_mode(False):
        torch.manual_seed(seed)
        sae = SparseAutoencoder(d, n_features, k=k)
        with torch.no_grad():
            w = torch.randn(n_features, d)
            w /= w.norm(dim=1, keepdim=True)
            sae.W_dec.copy_(w)
            sae.W_enc.copy_(w.T)
            sae.b_dec.copy_(t.mean(0))
        opt = torch.optim.Adam(sae.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        scale = t.var(0, unbiased=False).sum().clamp_min(1e-12)
        for _ in range(steps):
            rows = t[torch.randint(0, t.shape[0], (min(batch_size, t.shape[0]),), generator=g)]
            f = sae.encode(rows)
            loss = (sae.decode(f) - rows).pow(2).sum(-1).mean() / scale
            if k is None:
                loss = loss + l1 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean() / scale.sqrt()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
            opt.step()
            with torch.no_grad():
                sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
        opt.zero_grad(set_to_none=True)
    return sae.eval()


# --------------------------------------------------------------------------- on a causal LM


def _all_ids(prompts: Sequence[Any] | Any, tokenizer: Any) -> list[torch.Tensor]:
    items = [prompts] if isinstance(prompts, str) or torch.is_tensor(prompts) else list(prompts)
    if not items:
        raise InputError("no prompts were given; pass strings (with tokenizer=) or token id sequences")
    out: list[torch.Tensor] = []
    for p in items:
        ids = encode(p, tokenizer)
        out += list(ids[:, None])
    return out


def layer_activations(model: nn.Module, prompts: Sequence[Any] | Any, layer: int, *, tokenizer: Any = None,
                      layers: Iterable[nn.Module] | None = None, parts: DecoderParts | None = None) -> torch.Tensor:
    """The residual stream after ``layer`` for every token of ``prompts``: (tokens, d_model)."""
    p = find_parts(model, layers=layers, parts=parts)
    li = p.layer_index(layer)
    rows = []
    for ids in _all_ids(prompts, tokenizer):
        _, st = capture(model, p, ids, sites=("resid",))
        a = st["resid"][li]
        assert a is not None
        rows.append(a.reshape(-1, a.shape[-1]).float())
    return torch.cat(rows)


@dataclass(frozen=True)
class CEScore:
    """Next-token cross-entropy with the layer clean, zero-ablated and replaced by the SAE, and
    ``score = (zero - sae) / (zero - clean)``."""

    clean: float
    zero_ablated: float
    spliced: float

    @property
    def score(self) -> float:
        """1: the SAE loses nothing; 0: as bad as zeroing the layer's output."""
        return (self.zero_ablated - self.spliced) / (self.zero_ablated - self.clean)


def _ce(logits: torch.Tensor, ids: torch.Tensor) -> tuple[float, int]:
    lp = logits[:, :-1].float().log_softmax(-1)
    nll = -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return float(nll.sum()), int(nll.numel())


def sae_ce_score(model: nn.Module, prompts: Sequence[Any] | Any, layer: int, sae: nn.Module, *,
                 tokenizer: Any = None, layers: Iterable[nn.Module] | None = None,
                 parts: DecoderParts | None = None) -> CEScore:
    """The cross-entropy loss score of ``sae`` spliced in after ``layer`` (all positions)."""
    p = find_parts(model, layers=layers, parts=parts)
    li = p.layer_index(layer)
    totals = np.zeros(3)
    count = 0
    with torch.no_grad():
        for ids in _all_ids(prompts, tokenizer):
            if ids.shape[1] < 2:
                raise InputError("each prompt needs at least 2 tokens for a next-token loss")
            for j, edit in enumerate((None, torch.zeros_like, lambda t: sae(t).to(t.dtype))):
                edits = () if edit is None else (("resid", li, edit),)
                logits, _ = capture(model, p, ids, sites=(), edits=edits)
                s, n = _ce(logits, ids)
                totals[j] += s
            count += n
    clean, zero, spliced = (totals / count).tolist()
    if abs(zero - clean) < 1e-9:
        raise InputError("zero-ablating this layer does not change the loss, so the score is undefined")
    return CEScore(clean=clean, zero_ablated=zero, spliced=spliced)


@dataclass
class FeatureAttribution:
    """Each SAE feature's activation x gradient of the metric, summed over positions.

    ``values`` (n_features,); ``activations`` (T, n_features) are the features on the prompt.
    The reconstruction error is passed through unchanged, so the model's output is the clean one.
    """

    values: npt.NDArray[np.float64]
    activations: npt.NDArray[np.float64]
    metric: float
    layer: int

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` features with the largest absolute attribution, as ``(feature, value)``."""
        order = np.argsort(-np.abs(self.values))[:k]
        return [(int(i), float(self.values[i])) for i in order]

    def to_pandas(self) -> Any:
        """One row per active feature: attribution and its largest activation on the prompt."""
        import pandas as pd

        active = np.flatnonzero(self.activations.max(0) > 0)
        return pd.DataFrame({"feature": active, "attribution": self.values[active],
                             "max_activation": self.activations.max(0)[active]}).sort_values(
            "attribution", key=np.abs, ascending=False, ignore_index=True)


def feature_attribution(model: nn.Module, prompt: Any, layer: int, sae: SparseAutoencoder, *,
                        target: int | str, foil: int | str | None = None, tokenizer: Any = None,
                        position: int = -1, layers: Iterable[nn.Module] | None = None,
                        parts: DecoderParts | None = None) -> FeatureAttribution:
    """Attribute ``logit[target]`` (minus ``logit[foil]``) at ``position`` to the SAE's features
    after ``layer``: feature activation x gradient, summed over positions (Marks et al., 2024)."""
    p = find_parts(model, layers=layers, parts=parts)
    li = p.layer_index(layer)
    ids = encode(prompt, tokenizer)
    w = p.unembed.weight
    assert isinstance(w, torch.Tensor)
    tgt = token_id(target, tokenizer, w.shape[0], "target")
    fl = None if foil is None else token_id(foil, tokenizer, w.shape[0], "foil")
    t = ids.shape[1]
    if not isinstance(position, int) or not -t <= position < t:
        raise InputError(f"position={position!r} is outside the prompt's {t} tokens")
    feats: list[torch.Tensor] = []

    def splice(x: torch.Tensor) -> torch.Tensor:
        f = sae.encode(x.detach()).detach().requires_grad_(True)
        feats.append(f)
        x_hat = sae.decode(f)
        return x_hat + (x - x_hat).detach()

    with frozen_parameters(sae):
        logits, _ = capture(model, p, ids, sites=(), grad=True, edits=(("resid", li, splice),))
        metric = logits[0, position, tgt] - (logits[0, position, fl] if fl is not None else 0)
        (grad,) = torch.autograd.grad(metric, feats[0])
    f = feats[0].detach()[0]
    return FeatureAttribution(values=(f * grad[0]).sum(0).double().numpy(), activations=f.double().numpy(),
                              metric=float(metric.detach()), layer=li)
