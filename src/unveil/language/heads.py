"""Direct logit attribution to heads and MLPs, and head detectors from attention patterns.

Direct logit attribution (DLA): the final residual stream at a position is a sum of what the
embedding, every attention head, every attention output bias and every MLP wrote,
``x = e + sum_{l,h} head_{l,h} + sum_l b_O,l + sum_l mlp_l``. With the final norm's scale frozen
at the clean run (the standard approximation: ``norm(x) ~= s * w * centre(x) + b``, exact at this
``x``), the logit difference ``logit[target] - logit[foil]`` is linear in ``x`` and splits exactly
into one term per part, plus the norm's (and unembedding's) bias. Head ``h`` of layer ``l`` writes
``z_h @ W_O[h]``, its slice of the attention output projection (under grouped-query attention
there is still one slice per query head).

Head detectors (Olsson et al., 2022; Elhage et al., 2021) on ``[BOS] r r``, a random run ``r`` of
``half`` distinct tokens repeated: *previous-token* score = mean attention from ``i`` to ``i-1``;
*duplicate-token* = mean attention from a second-half ``i`` to its earlier copy ``i-half``;
*induction* = mean attention from a second-half ``i`` to ``i-half+1``, the token after the
earlier copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..core.hooks import model_guard
from ..errors import InputError, ModelError, OptionError
from ..zoo.induction import repeated_tokens
from ._grid import Grid, HtmlResult
from ._residual import DecoderParts, capture, encode, find_parts, frozen_final_norm, head_writes

__all__ = ["DirectLogitAttribution", "HeadScores", "direct_logit_attribution", "head_scores",
           "token_id"]


def token_id(token: int | str, tokenizer: Any, vocab: int, what: str) -> int:
    """A token id from an id or a string (its first token), checked against the vocabulary."""
    tid = int(encode(token, tokenizer, what=what)[0, 0]) if isinstance(token, str) else token
    if isinstance(tid, bool) or not isinstance(tid, (int, np.integer)) or not 0 <= int(tid) < vocab:
        raise InputError(f"{what}={token!r} is not a token id of this vocabulary (0..{vocab - 1}); "
                         "pass an id or a string with tokenizer=")
    return int(tid)


@dataclass
class DirectLogitAttribution(HtmlResult):
    """Each part's direct contribution to ``logit[target] - logit[foil]`` at one position.

    ``heads`` is (layers, heads); ``mlp`` and ``attn_bias`` are per layer; ``embed`` is the
    token (+ position) embedding's share and ``bias`` the final norm's and unembedding's.
    ``total`` (the sum of all) equals ``logit_diff`` up to float error.
    """

    page_title = 'direct logit attribution'

    heads: npt.NDArray[np.float64]
    mlp: npt.NDArray[np.float64]
    attn_bias: npt.NDArray[np.float64]
    embed: float
    bias: float
    logit_diff: float
    target: int
    foil: int
    position: int

    @property
    def total(self) -> float:
        """The sum of every part's contribution."""
        return float(self.heads.sum() + self.mlp.sum() + self.attn_bias.sum() + self.embed + self.bias)

    def grid(self) -> Grid:
        """Layer x (heads, attention bias, MLP) grid."""
        n_layers, n_heads = self.heads.shape
        values = np.concatenate([self.heads, self.attn_bias[:, None], self.mlp[:, None]], axis=1)
        return Grid(values, [str(i) for i in range(n_layers)],
                    [f"h{h}" for h in range(n_heads)] + ["attn bias", "mlp"], col_name="component",
                    title=f"direct logit attribution to logit[{self.target}] - logit[{self.foil}] "
                          f"at position {self.position}",
                    note=f"embedding {self.embed:+.3f}, final-norm bias {self.bias:+.3f}; total "
                         f"{self.total:+.3f} = logit difference {self.logit_diff:+.3f} (norm scale frozen)")

    def to_pandas(self) -> Any:
        """One row per component: ``component``, ``layer``, ``head``, ``value``."""
        import pandas as pd

        recs: list[dict[str, Any]] = [{"component": "embed", "layer": None, "head": None, "value": self.embed}]
        for layer in range(self.heads.shape[0]):
            recs += [{"component": "head", "layer": layer, "head": h, "value": float(v)}
                     for h, v in enumerate(self.heads[layer])]
            recs.append({"component": "attn_bias", "layer": layer, "head": None, "value": float(self.attn_bias[layer])})
            recs.append({"component": "mlp", "layer": layer, "head": None, "value": float(self.mlp[layer])})
        recs.append({"component": "bias", "layer": None, "head": None, "value": self.bias})
        return pd.DataFrame(recs)

    def to_html(self) -> str:
        """A self-contained HTML heat map."""
        return self.grid().to_html()



def direct_logit_attribution(model: nn.Module, prompt: Any, *, target: int | str, foil: int | str,
                             tokenizer: Any = None, position: int = -1,
                             layers: Iterable[nn.Module] | None = None,
                             parts: DecoderParts | None = None) -> DirectLogitAttribution:
    """Split ``logit[target] - logit[foil]`` at ``position`` into each head's, MLP's and the
    embedding's direct contribution (final-norm scale frozen at this run)."""
    parts = find_parts(model, layers=layers, parts=parts)
    parts.need_heads()
    ids = encode(prompt, tokenizer)
    if ids.shape[0] != 1:
        raise InputError(f"direct logit attribution reads one sequence, got {ids.shape[0]}")
    t = ids.shape[1]
    if not isinstance(position, int) or not -t <= position < t:
        raise InputError(f"position={position!r} is outside the prompt's {t} tokens")
    position %= t
    w_u = parts.unembed.weight  # (V, D)
    assert isinstance(w_u, torch.Tensor)
    tgt, foil_id = (token_id(x, tokenizer, w_u.shape[0], n) for x, n in ((target, "target"), (foil, "foil")))
    logits, st = capture(model, parts, ids, sites=("embed", "resid", "z", "mlp"))
    with torch.no_grad(), model_guard(model):
        x_final = st["resid"][-1]
        assert x_final is not None
        linear, bias = frozen_final_norm(parts, x_final[0, position])
        direction = (w_u[tgt] - w_u[foil_id]).to(x_final.dtype)

        def score(v: torch.Tensor) -> npt.NDArray[np.float64]:
            return (linear(v) * direction).sum(-1).double().numpy()

        heads = np.zeros((parts.n_layers, parts.n_heads))
        attn_bias = np.zeros(parts.n_layers)
        mlp = np.zeros(parts.n_layers)
        for layer in range(parts.n_layers):
            z, o = st["z"][layer], parts.o_proj[layer]
            if z is None or o is None:
                raise ModelError(f"layer {layer}'s attention output projection was not called")
            heads[layer] = score(head_writes(o, z[0, position], parts.n_heads))
            b = getattr(o, "bias", None)
            if isinstance(b, torch.Tensor):
                attn_bias[layer] = float(score(b.to(x_final.dtype)))
            m = st["mlp"][layer]
            if m is not None:
                mlp[layer] = float(score(m[0, position]))
        e = st["embed"][0]
        assert e is not None
        ub = getattr(parts.unembed, "bias", None)
        extra = float(ub[tgt] - ub[foil_id]) if isinstance(ub, torch.Tensor) else 0.0
        const = float((bias * direction).sum()) + extra
        diff = float(logits[0, position, tgt] - logits[0, position, foil_id])
    return DirectLogitAttribution(heads=heads, mlp=mlp, attn_bias=attn_bias, embed=float(score(e[0, position])),
                                  bias=const, logit_diff=diff, target=tgt, foil=foil_id, position=position)


@dataclass
class HeadScores(HtmlResult):
    """Previous-token, duplicate-token and induction scores per (layer, head), each in [0, 1]."""

    page_title = 'head scores'

    previous_token: npt.NDArray[np.float64]
    duplicate_token: npt.NDArray[np.float64]
    induction: npt.NDArray[np.float64]
    half: int
    n_sequences: int

    def top(self, kind: str, k: int = 3) -> list[tuple[int, int, float]]:
        """The ``k`` highest-scoring heads of a detector as ``(layer, head, score)``."""
        s = self._scores(kind)
        order = np.argsort(-s, axis=None)[:k]
        return [(int(i // s.shape[1]), int(i % s.shape[1]), float(s.flat[i])) for i in order]

    def _scores(self, kind: str) -> npt.NDArray[np.float64]:
        names = {"previous_token": self.previous_token, "duplicate_token": self.duplicate_token,
                 "induction": self.induction}
        if kind not in names:
            raise OptionError(f"kind={kind!r}; expected one of {', '.join(names)}")
        return names[kind]

    def grid(self, kind: str = "induction") -> Grid:
        """One detector's scores as a layer x head grid."""
        s = self._scores(kind)
        return Grid(s, [str(i) for i in range(s.shape[0])], [f"h{h}" for h in range(s.shape[1])],
                    col_name="head", diverging=False,
                    title=f"{kind.replace('_', '-')} score per head ({self.n_sequences} random "
                          f"sequences of {self.half} tokens, repeated)")

    def to_pandas(self) -> Any:
        """One row per head with the three scores."""
        import pandas as pd

        n_layers, n_heads = self.induction.shape
        return pd.DataFrame([{"layer": layer, "head": h, "previous_token": self.previous_token[layer, h],
                              "duplicate_token": self.duplicate_token[layer, h],
                              "induction": self.induction[layer, h]}
                             for layer in range(n_layers) for h in range(n_heads)])

    def to_html(self) -> str:
        """The three detectors' heat maps, one after another."""
        return "".join(self.grid(k).to_html() for k in ("previous_token", "duplicate_token", "induction"))



def head_scores(model: nn.Module, *, half: int = 20, n_sequences: int = 8, seed: int = 0,
                bos_token_id: int | None = -1, vocab_size: int | None = None,
                layers: Iterable[nn.Module] | None = None,
                parts: DecoderParts | None = None) -> HeadScores:
    """Score every head as a previous-token, duplicate-token and induction head.

    Runs ``n_sequences`` sequences ``[BOS] r r`` (``r``: ``half`` distinct random tokens) and
    averages attention weights (computed eagerly). ``bos_token_id=-1`` takes the model config's
    BOS (none if it has none); ``None`` uses no BOS.
    """
    parts = find_parts(model, layers=layers, parts=parts)
    if not isinstance(half, int) or half < 2:
        raise OptionError(f"half must be an integer >= 2, got {half!r}")
    cfg = getattr(model, "config", None)
    w_u = parts.unembed.weight
    assert isinstance(w_u, torch.Tensor)
    vocab = int(vocab_size or w_u.shape[0])
    bos = getattr(cfg, "bos_token_id", None) if bos_token_id == -1 else bos_token_id
    bos = bos if isinstance(bos, int) and 0 <= bos < vocab else None
    ids = repeated_tokens(n_sequences, half, vocab_size=vocab, bos=bos if bos is not None else None, seed=seed)
    _, st = capture(model, parts, ids, sites=("attn",))
    off = 1 if bos is not None else 0
    t = ids.shape[1]
    prev_q = torch.arange(max(off, 1), t)
    second = torch.arange(off + half, t)
    out: dict[str, list[npt.NDArray[np.float64]]] = {"prev": [], "dup": [], "ind": []}
    for layer, a in enumerate(st["attn"]):
        if a is None:
            raise ModelError(f"layer {layer}'s attention module was not called or found")
        a = a.double()
        out["prev"].append(a[:, :, prev_q, prev_q - 1].mean((0, 2)).numpy())
        out["dup"].append(a[:, :, second, second - half].mean((0, 2)).numpy())
        out["ind"].append(a[:, :, second, second - half + 1].mean((0, 2)).numpy())
    return HeadScores(previous_token=np.stack(out["prev"]), duplicate_token=np.stack(out["dup"]),
                      induction=np.stack(out["ind"]), half=half, n_sequences=n_sequences)
