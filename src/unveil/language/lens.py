"""The logit lens and the tuned lens: what the residual stream would predict after each layer.

Logit lens (nostalgebraist, 2020): the residual stream after layer ``l`` is passed through the
model's own final norm and unembedding, ``lens_l(h) = unembed(norm(h))``; after the last layer
this is exactly the model's logits. Tuned lens (Belrose et al., 2023, "Eliciting latent
predictions from transformers with the tuned lens"): one affine translator per layer,
``lens_l(h) = unembed(norm(h + A_l h + b_l))``, fitted so that its distribution matches the final
one (KL(final || lens_l), averaged over tokens). ``A_l`` and ``b_l`` start at zero, so an untrained
tuned lens is the logit lens.

Rows of the results are ``"embed"`` (the input of layer 0) and layers ``0 .. L-1``.
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

from ..core.hooks import model_guard
from ..errors import InputError, OptionError
from ._grid import Grid, HtmlResult
from ._residual import DecoderParts, capture, encode, find_parts, token_labels

__all__ = ["LensResult", "TunedLens", "logit_lens", "train_tuned_lens"]


class TunedLens(nn.Module):
    """One affine translator per layer but the last (identity there: the final layer needs none).

    ``translators[i]`` acts on row ``i`` (``"embed"``, then layers ``0 .. L-2``) as
    ``h + translators[i](h)``; weights and biases start at zero.
    """

    def __init__(self, d_model: int, n_layers: int) -> None:
        super().__init__()
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))
        for t in self.translators:
            assert isinstance(t, nn.Linear)
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)

    def translate(self, h: torch.Tensor, row: int) -> torch.Tensor:
        """The translated residual stream of row ``row`` (0 = embeddings)."""
        if row >= len(self.translators):
            return h
        shift: torch.Tensor = self.translators[row](h)
        return h + shift


@dataclass
class LensResult(HtmlResult):
    """Lens predictions per layer (rows) and position (columns).

    Attributes
    ----------
    logits : torch.Tensor
        (rows, T, vocab) lens logits; the last row equals the model's logits.
    target_ids : list of int
        The token whose probability ``target_prob`` tracks, per position.
    target_prob : ndarray
        (rows, T) probability of the target token under each layer's lens.
    top_ids, top_probs : ndarray
        (rows, T, k) the lens's top tokens and their probabilities.
    """

    page_title = 'logit lens'

    logits: torch.Tensor
    rows: list[str]
    tokens: list[str]
    target_ids: list[int]
    target_prob: npt.NDArray[np.float64]
    top_ids: npt.NDArray[np.int64]
    top_probs: npt.NDArray[np.float64]
    top_tokens: list[list[list[str]]]
    kind: str = "logit"

    def grid(self) -> Grid:
        """The target probability as a layer x position grid, cells labelled with the top token."""
        cols = [f"{i}:{t}" for i, t in enumerate(self.tokens)]
        text = [[f"{self.top_tokens[r][p][0]}\n{self.target_prob[r, p]:.2f}" for p in range(len(cols))]
                for r in range(len(self.rows))]
        return Grid(self.target_prob, list(self.rows), cols, diverging=False, cell_text=text,
                    title=f"{self.kind} lens: probability of the target token (cell: the lens's top token)")

    def to_pandas(self) -> Any:
        """Long table: one row per (layer, position) with top token and target probability."""
        import pandas as pd

        recs = [{"layer": r, "position": p, "token": self.tokens[p], "top_token": self.top_tokens[i][p][0],
                 "top_prob": float(self.top_probs[i, p, 0]), "target_id": self.target_ids[p],
                 "target_prob": float(self.target_prob[i, p])}
                for i, r in enumerate(self.rows) for p in range(len(self.tokens))]
        return pd.DataFrame(recs)

    def to_html(self) -> str:
        """A self-contained HTML heat map."""
        return self.grid().to_html()



def _lens_logits(parts: DecoderParts, states: Sequence[torch.Tensor], tuned: TunedLens | None) -> torch.Tensor:
    out = []
    for row, h in enumerate(states):
        if tuned is not None:
            h = tuned.translate(h, row)
        out.append(parts.unembed(parts.final_norm(h)))
    return torch.stack(out)


def _states(model: nn.Module, parts: DecoderParts, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    logits, st = capture(model, parts, ids, sites=("embed", "resid"))
    states = [st["embed"][0], *st["resid"]]
    if any(s is None for s in states):
        raise InputError("the residual stream was not recorded at every layer")
    return logits, [s for s in states if s is not None]


def logit_lens(model: nn.Module, prompt: Any, *, tokenizer: Any = None, target: int | str | None = None,
               top_k: int = 5, tuned: TunedLens | None = None, layers: Iterable[nn.Module] | None = None,
               parts: DecoderParts | None = None) -> LensResult:
    """Decode the residual stream after every layer with the model's final norm and unembedding.

    Parameters
    ----------
    model : nn.Module
        A causal LM (Hugging Face or described by ``parts``).
    prompt : str or token ids
        One sequence; a string needs ``tokenizer``.
    target : int, str or None
        The token whose probability is tracked: an id, a string (its first token), or ``None``
        for the model's own top prediction at each position.
    tuned : TunedLens, optional
        Apply these translators first (from :func:`train_tuned_lens`).
    """
    parts = find_parts(model, layers=layers, parts=parts)
    ids = encode(prompt, tokenizer)
    if ids.shape[0] != 1:
        raise InputError(f"the lens reads one sequence at a time, got {ids.shape[0]}")
    if not isinstance(top_k, int) or top_k < 1:
        raise OptionError(f"top_k must be a positive integer, got {top_k!r}")
    logits, states = _states(model, parts, ids)
    with torch.no_grad(), model_guard(model):
        lens = _lens_logits(parts, states, tuned)[:, 0].float()  # (rows, T, V)
    probs = lens.softmax(-1)
    t = ids.shape[1]
    if target is None:
        tgt = logits[0].argmax(-1).tolist()
    else:
        tid = encode(target, tokenizer, what="target")[0, 0].item() if isinstance(target, str) else int(target)
        if not 0 <= tid < lens.shape[-1]:
            raise InputError(f"target={target!r} is not a token id of this vocabulary (0..{lens.shape[-1] - 1})")
        tgt = [int(tid)] * t
    k = min(top_k, lens.shape[-1])
    tp, ti = probs.topk(k, dim=-1)
    target_prob = probs[:, torch.arange(t), torch.tensor(tgt)]
    labels = token_labels(ti.reshape(-1).tolist(), tokenizer)
    top_tokens = np.array(labels, dtype=object).reshape(ti.shape).tolist()
    return LensResult(logits=lens, rows=["embed", *map(str, range(parts.n_layers))],
                      tokens=token_labels(ids[0].tolist(), tokenizer), target_ids=[int(x) for x in tgt],
                      target_prob=target_prob.double().numpy(), top_ids=ti.numpy(),
                      top_probs=tp.double().numpy(), top_tokens=top_tokens,
                      kind="logit" if tuned is None else "tuned")


def train_tuned_lens(model: nn.Module, texts: Sequence[Any], *, tokenizer: Any = None, steps: int = 200,
                     lr: float = 1e-3, seed: int = 0, layers: Iterable[nn.Module] | None = None,
                     parts: DecoderParts | None = None) -> TunedLens:
    """Fit one affine translator per layer so each layer's lens matches the final distribution.

    The model is run once per text (hidden states recorded without gradients); the translators
    are then fitted with Adam on the sum over layers of KL(final || lens_l), averaged over tokens.
    The model's parameters stay frozen. Returns a :class:`TunedLens` for :func:`logit_lens`.
    """
    parts = find_parts(model, layers=layers, parts=parts)
    if not texts:
        raise InputError("texts is empty; pass a few strings (with tokenizer=) or token id sequences")
    if not isinstance(steps, int) or steps < 1:
        raise OptionError(f"steps must be a positive integer, got {steps!r}")
    rows: list[list[torch.Tensor]] = []
    finals: list[torch.Tensor] = []
    for text in texts:
        ids = encode(text, tokenizer)
        logits, states = _states(model, parts, ids)
        rows.append([s.reshape(-1, s.shape[-1]).float() for s in states])
        finals.append(logits.reshape(-1, logits.shape[-1]).float())
    stacked = [torch.cat([r[i] for r in rows]) for i in range(len(rows[0]))]
    target = torch.cat(finals).log_softmax(-1)
    d = stacked[0].shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lens = TunedLens(d, parts.n_layers)
    opt = torch.optim.Adam(lens.parameters(), lr=lr)
    with model_guard(model), torch.enable_grad():
        for _ in range(steps):
            loss = torch.zeros(())
            for row in range(parts.n_layers):  # the last row is the identity
                pred = parts.unembed(parts.final_norm(lens.translate(stacked[row], row))).float()
                loss = loss + F.kl_div(pred.log_softmax(-1), target, log_target=True, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
            opt.step()
    opt.zero_grad(set_to_none=True)
    return lens.eval()
