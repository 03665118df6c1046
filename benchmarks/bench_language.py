"""Language models: SmolLM2-135M forward at 1 and 2 threads, and per-token IG of a generation
against the forward+backward floor and Captum's ``LLMGradientAttribution``.

Workload: SmolLM2-135M-Instruct (``zoo:smollm2``, float32). (1) One forward of a 14-token
prompt at 1 and 2 torch threads. (2) A 30-token prompt and its 20-token greedy continuation;
IG with 32 Gauss-Legendre steps per generated token on the embedding output, prompt tokens
moving from token id 0, earlier generated tokens held fixed (``sources="prompt"``, Captum's
convention), at unveil's default of one thread; Captum's ``LLMGradientAttribution`` with
``LayerIntegratedGradients`` on the same layer, same steps and baseline, at the same thread
count. The floor is, per generated token, one forward+backward of the 32 path rows as one batch
(last position's logits only), differentiated at the embedding output. ``--quick`` uses a tiny
random Llama with 3 tokens and 4 steps.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import Context, Row, drop_torchvision_stub, median_time

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


def _floor(model: nn.Module, full: torch.Tensor, p: int, n_steps: int) -> float:
    """Sum over generated tokens of one forward+backward of ``n_steps`` rows."""
    emb = model.get_input_embeddings()
    total = 0.0
    for g in range(len(full) - p):
        rows = full[: p + g].expand(n_steps, -1).contiguous()
        target = int(full[p + g])

        def once(rows: torch.Tensor = rows, target: int = target) -> None:
            z = emb(rows).detach().requires_grad_()
            lp = model(inputs_embeds=z, use_cache=False, logits_to_keep=1).logits[:, -1]
            torch.autograd.grad(lp.log_softmax(-1)[:, target].sum(), z)

        total += median_time(once, repeats=1, warmup=0)
    return total


def _threads(n: int) -> Any:
    class _T:
        def __enter__(self) -> None:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *_: Any) -> None:
            torch.set_num_threads(self.saved)

    return _T()


def run(ctx: Context) -> list[Row]:
    drop_torchvision_stub()
    import captum.attr

    from unveil.language import explain_generation

    model, tok, name = _workload(ctx.quick)
    for prm in model.parameters():
        prm.requires_grad_(False)
    rows: list[Row] = []
    ids14 = torch.tensor([tok.encode(PROMPT14)])
    fwd = {}
    for threads in (1, 2):
        with _threads(threads), torch.inference_mode():
            fwd[threads] = median_time(lambda: model(input_ids=ids14, use_cache=False),
                                       repeats=ctx.repeats(5))
    for threads in (1, 2):
        rows.append(Row("language", "forward", f"{name} {ids14.shape[1]} tok, {threads} thr",
                        fwd[threads], note=f"2 thr / 1 thr = {fwd[2] / fwd[1]:.2f}"))

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

    with _threads(1):
        t0 = time.perf_counter()
        res = unveil_run()
        t_uv = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = captum_run()
        t_ref = time.perf_counter() - t0
        floor = _floor(model, torch.as_tensor(res.ids), res.n_prompt, n_steps)
    theirs = ref.token_attr.detach().double().numpy()
    corr = min(float(np.corrcoef(res.values[g, : res.n_prompt], theirs[g])[0, 1])
               for g in range(len(cont)))
    rows.append(Row("language", "integrated_gradients",
                    f"{name} {len(ids30)}+{len(cont)} tok, IG-{n_steps}, 1 thr", t_uv,
                    "captum LLMGradientAttribution", t_ref, n_evals=res.n_evals, floor_s=floor,
                    note=f"min per-token corr with captum {corr:.4f}"))
    return rows
