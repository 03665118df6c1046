"""Language models: SmolLM2-135M forward at 1 and 2 threads, and per-token IG of a generation
against the forward+backward floor and Captum's ``LLMGradientAttribution``.

Workload: SmolLM2-135M-Instruct (``zoo:smollm2``, float32).

(1) One forward of a 14-token prompt, timed in turns (:func:`alternate`): plain torch at 1 and 2
threads (why unveil's language calls default to ``threads=1``), and the forward as unveil runs
it (its scoring module inside unveil's default thread setting) with the caller's torch at 1 and
at 2 threads: at unveil's defaults 2 threads must be no slower than 1.

(2) A 30-token prompt and its 20-token greedy continuation; IG with 32 Gauss-Legendre steps per
generated token on the embedding output, prompt tokens moving from token id 0, earlier generated
tokens held fixed (``sources="prompt"``, Captum's convention), at one thread. Captum's
``LLMGradientAttribution`` with ``LayerIntegratedGradients`` on the same layer, same steps and
baseline. The floor is what IG per token needs at best: per generated token, a forward+backward
of its 32 path rows (last position's logits only, differentiated at the embedding output), in
chunks of the best batch size (measured among 4, 8, 16, 32 rows). unveil shares forwards
between tokens (see ``unveil/language/_shared_ig.py``), so it does less work than that floor.
The three are timed in turns and the medians reported, with the load average.
``--quick`` uses a tiny random Llama with 3 tokens and 4 steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import Context, Row, alternate, drop_torchvision_stub, load_info, median_time

PROMPT14 = "When Mary and John went to the store, John gave a drink to"
PROMPT30 = ("The old lighthouse keeper climbed the narrow stairs every evening, lit the lamp, "
            "and wrote in his logbook about the ships that passed in the")


def _workload(quick: bool) -> tuple[nn.Module, Any, str]:
    if quick:
        from tests.language._lm_models import tiny_llama, tiny_tokenizer

        return tiny_llama(), tiny_tokenizer(), "tiny Llama"
    from unveil.zoo.language import smollm2

    model, tok = smollm2()
    return model, tok, "SmolLM2-135M"


class _Threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *_: Any) -> None:
        torch.set_num_threads(self.saved)


def _fwd_bwd(model: nn.Module, rows: torch.Tensor, target: int) -> None:
    z = model.get_input_embeddings()(rows).detach().requires_grad_()
    lp = model(inputs_embeds=z, use_cache=False, logits_to_keep=1).logits[:, -1]
    torch.autograd.grad(lp.float().log_softmax(-1)[:, target].sum(), z)


def _floor(model: nn.Module, full: torch.Tensor, p: int, n_steps: int, batch: int) -> None:
    """Per generated token, a forward+backward of its ``n_steps`` path rows, ``batch`` at a time."""
    for g in range(len(full) - p):
        rows = full[: p + g].expand(n_steps, -1).contiguous()
        for a in range(0, n_steps, batch):
            _fwd_bwd(model, rows[a : a + batch], int(full[p + g]))


def _best_batch(model: nn.Module, full: torch.Tensor, p: int, n_steps: int) -> int:
    """The chunk size (among 4, 8, 16, 32 and at most ``n_steps``) with the best time per row,
    on the middle generated token's path rows."""
    g = (len(full) - p) // 2
    rows = full[: p + g].expand(n_steps, -1).contiguous()
    best, best_t = n_steps, float("inf")
    for b in sorted({min(b, n_steps) for b in (4, 8, 16, 32)}):
        t = median_time(lambda b=b: _fwd_bwd(model, rows[:b], int(full[p + g])), repeats=2) / b
        if t < best_t:
            best, best_t = b, t
    return best


def _forward_rows(ctx: Context, model: nn.Module, tok: Any, name: str) -> list[Row]:
    from unveil.language import NextTokenScore
    from unveil.language.generation import DEFAULT_THREADS, torch_threads

    ids14 = torch.tensor([tok.encode(PROMPT14)])
    score = NextTokenScore(model, 0, keep_last=True)

    def raw(n: int) -> Any:
        def go() -> None:
            with _Threads(n), torch.inference_mode():
                model(input_ids=ids14, use_cache=False)
        return go

    def ours(n: int) -> Any:
        def go() -> None:
            with _Threads(n), torch_threads(DEFAULT_THREADS), torch.inference_mode():
                score(ids14)
        return go

    t = alternate([raw(1), raw(2), ours(1), ours(2)], repeats=ctx.repeats(9), warmup=1)
    load = load_info()
    note = (f"unveil (threads={DEFAULT_THREADS} by default) 2 thr / 1 thr = {t[3] / t[2]:.2f}; "
            f"plain torch 2 thr / 1 thr = {t[1] / t[0]:.2f}; timed in turns, {load}")
    return [Row("language", "forward", f"{name} {ids14.shape[1]} tok, caller at {n} thr", t[2 + k],
                f"torch forward, {n} thr", t[k], note=note,
                extra={"unveil_2_over_1": t[3] / t[2], "torch_2_over_1": t[1] / t[0]})
            for k, n in enumerate((1, 2))]


def run(ctx: Context) -> list[Row]:
    drop_torchvision_stub()
    import captum.attr

    from unveil.language import explain_generation

    model, tok, name = _workload(ctx.quick)
    for prm in model.parameters():
        prm.requires_grad_(False)
    rows = _forward_rows(ctx, model, tok, name)

    n_new, n_steps = (3, 4) if ctx.quick else (20, 32)
    prompt = "When Mary and John went" if ctx.quick else PROMPT30
    ids30 = tok.encode(prompt)
    gen = explain_generation(model, tok, prompt, max_new_tokens=n_new, method="saliency",
                             stop_at_eos=False)
    cont = [int(i) for i in gen.ids[gen.n_prompt:]]
    if ctx.quick:  # the random model writes byte soup, which Captum's token display trips on
        cont = tok.encode(" to the", add_special_tokens=False)

    def unveil_run() -> Any:
        return explain_generation(model, tok, prompt, continuation=cont, n_steps=n_steps,
                                  sources="prompt")

    lig = captum.attr.LayerIntegratedGradients(model, model.get_input_embeddings())
    llm = captum.attr.LLMGradientAttribution(lig, tok)
    inp = captum.attr.TextTokenInput(prompt, tok)

    def captum_run() -> Any:
        return llm.attribute(inp, target=torch.tensor(cont), n_steps=n_steps)

    with _Threads(1):
        res, ref = unveil_run(), captum_run()  # also the warm-up
        full = torch.as_tensor(res.ids)
        batch = _best_batch(model, full, res.n_prompt, n_steps)
        t_uv, t_floor, t_ref = alternate(
            [unveil_run, lambda: _floor(model, full, res.n_prompt, n_steps, batch), captum_run],
            repeats=ctx.repeats(3), warmup=0)
    theirs = ref.token_attr.detach().double().numpy()
    corr = min(float(np.corrcoef(res.values[g, : res.n_prompt], theirs[g])[0, 1])
               for g in range(len(cont)))
    segs = res.params.get("segments", "")
    rows.append(Row(
        "language", "integrated_gradients",
        f"{name} {len(ids30)}+{len(cont)} tok, IG-{n_steps}, 1 thr", t_uv,
        "captum LLMGradientAttribution", t_ref, n_evals=res.n_evals, floor_s=t_floor,
        note=(f"unveil / floor {t_uv / t_floor:.2f}, captum / floor {t_ref / t_floor:.2f}; floor: "
              f"{len(cont)} x fwd+bwd of {n_steps} rows in chunks of {batch}; unveil shares "
              f"forwards (segments {segs}); min per-token corr with captum {corr:.4f}; medians "
              f"of {ctx.repeats(3)} turns, {load_info()}"),
        extra={"unveil_over_floor": t_uv / t_floor, "captum_over_floor": t_ref / t_floor,
               "corr": corr, "floor_batch": batch}))
    return rows
