"""A 2-layer attention-only transformer that forms induction heads, trained in seconds on CPU.

Sequences are ``[BOS] r r``: a run ``r`` of distinct random tokens, then the same run again. Its
second half can be predicted only by looking back: a *previous-token head* in layer 1 (index 0)
writes "my previous token was A" into each position, and an *induction head* in layer 2 (index 1)
finds the earlier position whose previous token equals the current one and copies the token there
(Olsson et al., 2022, "In-context learning and induction heads"). The model is the test bed for
the language inside views (head detectors, activation patching): the mechanism is known.

Module names follow Hugging Face's Llama (``model.layers[i].self_attn.o_proj``, ``model.norm``,
``lm_head``), so :mod:`unveil.language` finds its parts like any other decoder. Weights are cached
as safetensors under ``UNVEIL_CACHE`` like the other zoo models and retrained when the recipe changes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unveil.zoo._cache import load_or_train
from unveil.zoo.fitting import one_thread

__all__ = ["INDUCTION", "InductionConfig", "InductionTransformer", "induction_transformer",
           "repeated_tokens"]

logger = logging.getLogger("unveil.zoo")


@dataclass(frozen=True)
class InductionConfig:
    """Shape and training recipe of :class:`InductionTransformer` (part of the cache identity)."""

    vocab_size: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    max_positions: int = 64
    min_half: int = 6
    max_half: int = 24
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    bos_token_id: int = 0
    version: int = 1


INDUCTION = InductionConfig()


class _Attention(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = h, d // h
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, _ = x.shape
        q, k, v = (p(x).view(n, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        weights: torch.Tensor = scores.masked_fill(causal, float("-inf")).softmax(-1)
        z = (weights @ v).transpose(1, 2).reshape(n, t, -1)
        out: torch.Tensor = self.o_proj(z)
        return out, weights


class _Layer(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(d)
        self.self_attn = _Attention(d, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.self_attn(self.input_layernorm(x))[0]
        return out


class _Body(nn.Module):
    def __init__(self, c: InductionConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.embed_positions = nn.Embedding(c.max_positions, c.d_model)
        self.layers = nn.ModuleList(_Layer(c.d_model, c.n_heads) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)


class InductionTransformer(nn.Module):
    """Attention-only decoder: token + learned position embeddings, pre-norm attention layers,
    a final LayerNorm and an unembedding. ``forward(input_ids)`` returns logits (N, T, vocab)."""

    def __init__(self, config: InductionConfig = INDUCTION) -> None:
        super().__init__()
        self.config = config
        self.model = _Body(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[-1]
        if t > self.config.max_positions:
            raise ValueError(f"at most {self.config.max_positions} tokens, got {t}")
        pos = torch.arange(t, device=input_ids.device)
        x = self.model.embed_tokens(input_ids) + self.model.embed_positions(pos)
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(self.model.norm(x))  # type: ignore[no-any-return]  # Linear's output


def repeated_tokens(n: int, half: int, *, vocab_size: int = INDUCTION.vocab_size, bos: int | None = 0,
                    seed: int | torch.Generator = 0) -> torch.Tensor:
    """``n`` sequences ``[BOS] r r`` of distinct random tokens ``r`` (``half`` each, never BOS).

    Returns int64 ids shaped (n, 1 + 2*half), or (n, 2*half) with ``bos=None``.
    """
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    pool = vocab_size - (0 if bos is None else 1)
    if half > pool:
        raise ValueError(f"half={half} distinct tokens do not fit a vocabulary of {vocab_size}")
    r = torch.rand(n, pool, generator=g).argsort(-1)[:, :half]
    if bos is not None:
        r = r + (r >= bos).long()  # skip the BOS id
    seq = torch.cat([r, r], dim=1)
    if bos is None:
        return seq
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), seq], dim=1)


def _train(c: InductionConfig) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    logger.info("training zoo model induction_transformer")
    start, start_cpu = time.perf_counter(), time.process_time()
    with one_thread(), torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(c.seed)
        model = InductionTransformer(c)
        g = torch.Generator().manual_seed(c.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=c.steps)
        model.train()
        for _ in range(c.steps):
            half = int(torch.randint(c.min_half, c.max_half + 1, (1,), generator=g))
            ids = repeated_tokens(c.batch_size, half, vocab_size=c.vocab_size, bos=c.bos_token_id, seed=g)
            logits = model(ids[:, :-1])
            # only the second half is predictable: score the predictions of its tokens 2..half
            loss = F.cross_entropy(logits[:, half + 1:].reshape(-1, c.vocab_size),
                                   ids[:, half + 2:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
            opt.step()
            sched.step()
        opt.zero_grad(set_to_none=True)
        model.eval()
        test = repeated_tokens(64, 16, vocab_size=c.vocab_size, bos=c.bos_token_id, seed=10_000 + c.seed)
        with torch.no_grad():
            pred = model(test[:, :-1])[:, 17:].argmax(-1)
        accuracy = float((pred == test[:, 18:]).float().mean())
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    logger.info("trained induction_transformer in %.1f s; second-half accuracy %.3f", seconds, accuracy)
    info: dict[str, object] = {"train_seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                               "second_half_accuracy": accuracy}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, info


def induction_transformer(*, cache_dir: str | os.PathLike[str] | None = None,
                          retrain: bool = False) -> InductionTransformer:
    """Return the 2-layer attention-only induction transformer, in eval mode (a fresh module).

    Vocabulary of 64 ids (0 is BOS), up to 64 positions, 4 heads of 16 dimensions per layer.
    Trained once (about 15-40 s on one CPU thread) and cached under ``UNVEIL_CACHE``.
    """
    c = INDUCTION
    with torch.inference_mode(False):
        with torch.random.fork_rng(devices=[]):
            model = InductionTransformer(c)
        template = {k: (tuple(t.shape), t.dtype) for k, t in model.state_dict().items()}
        identity = {"name": "induction_transformer", "config": asdict(c),
                    "torch_version": torch.__version__}
        state = load_or_train("induction_transformer", identity, lambda: _train(c), template,
                              cache_dir=cache_dir, retrain=retrain)
        model.load_state_dict(state)
    return model.eval()
