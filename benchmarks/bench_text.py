"""Text: Integrated Gradients on MiniLM token embeddings against Captum, and attention methods.

Workload: the offline MiniLM sentence encoder as a zero-shot classifier (``unveil.text.
minilm_zero_shot``) on one review truncated to exactly 64 tokens. IG with 32 Gauss-Legendre
steps at the word-embedding output, baseline the [PAD] embedding at every position, against
``captum.attr.LayerIntegratedGradients`` on the same layer with the same baseline and rule (its
default: all steps in one batch), the two timed alternately. The floor is one forward+backward
of the 32 path points as one batch, differentiated at the embedding output. ``--quick`` uses a
tiny random BERT instead.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._common import Context, Row, drop_torchvision_stub, median_time

TEXT = (
    "I went in expecting very little, but this film turned out to be a wonderful surprise: the "
    "acting is brilliant, the story moves at a steady pace, the music fits every scene, and "
    "the ending left the whole audience smiling on the way out of the theatre. It is not "
    "perfect, and a few scenes drag, yet I would happily watch it again with friends."
)


def _workload(quick: bool) -> tuple[nn.Module, torch.Tensor, nn.Module, str]:
    from unveil.text import TextClassifier

    if quick:
        import transformers

        cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64,
                                      num_labels=2, pad_token_id=0)
        torch.manual_seed(0)
        bert = transformers.BertForSequenceClassification(cfg).eval()
        ids = torch.randint(1, 100, (1, 16))
        return TextClassifier(bert), ids, bert.bert.embeddings.word_embeddings, "tiny BERT 16 tok"
    from unveil.text import minilm_zero_shot

    clf = minilm_zero_shot()
    ids, mask = clf.encode([TEXT], pad_to=64)
    assert ids.shape == (1, 64) and bool(mask.all())
    return clf, ids, clf.encoder.embeddings.word_embeddings, "MiniLM 64 tok"


def _floor(model: nn.Module, ids: torch.Tensor, layer: nn.Module, n_steps: int, repeats: int) -> float:
    """Forward+backward of ``n_steps`` rows as one batch, gradient at the embedding output."""
    rows = ids.expand(n_steps, -1).contiguous()
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        store.append(out.detach().requires_grad_())
        return store[-1]

    def once() -> None:
        store.clear()
        h = layer.register_forward_hook(hook)
        try:
            score = model(rows)[:, 1].sum()
            torch.autograd.grad(score, store[0])
        finally:
            h.remove()

    return median_time(once, repeats=repeats)


def _interleaved(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median times of ``a`` and ``b`` timed alternately (fair under a changing machine load)."""
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def run(ctx: Context) -> list[Row]:
    drop_torchvision_stub()  # an earlier module (CAMs, feature visualization) may have added it
    import captum.attr

    import unveil as uv

    model, ids, layer, name = _workload(ctx.quick)
    n_steps = 4 if ctx.quick else 32
    reps = ctx.repeats(5)
    for p in model.parameters():
        p.requires_grad_(False)

    def unveil_run() -> Any:
        return uv.explain(model, ids, method="integrated_gradients", n_steps=n_steps, target=1)

    lig = captum.attr.LayerIntegratedGradients(model, layer)

    def captum_run() -> torch.Tensor:
        return lig.attribute(ids, baselines=torch.zeros_like(ids), target=1, n_steps=n_steps,
                             method="gausslegendre").sum(-1)

    exp, ref = unveil_run(), captum_run().detach().numpy()  # warm-up, and the values
    diff = float(abs(exp.values - ref).max())
    gap = abs(float(exp.delta[0])) / abs(float(exp.outputs[0] - exp.baseline_outputs[0]))
    note = (f"{n_steps} steps; max|diff| {diff:.1e} (max|attr| {float(abs(ref).max()):.2g}); "
            f"rel. completeness gap {gap:.1e}")
    rows = []
    for threads in (torch.get_num_threads(), 1) if not ctx.quick else (torch.get_num_threads(),):
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            t_uv, t_ref = _interleaved(unveil_run, captum_run, reps)
            floor = _floor(model, ids, layer, n_steps, reps)
        finally:
            torch.set_num_threads(saved)
        rows.append(Row("text", "integrated_gradients", f"{name}, {threads} thr", t_uv,
                        "captum LayerIG", t_ref, n_evals=exp.n_evals, floor_s=floor, note=note))
    for method in ("attention_rollout", "grad_attention_rollout", "attention_flow"):
        t = median_time(lambda m=method: uv.explain(model, ids, method=m, target=1),
                        repeats=1 if method == "attention_flow" else reps)
        rows.append(Row("text", method, name, t, note="no reference library implements it"))
    return rows
