"""Generation attribution: which prompt tokens (and earlier generated tokens) made a causal
language model write each token it wrote.

For generated token ``y_g`` after the prompt ``x`` the explained score is
``log p(y_g | x, y_<g)`` (as Captum's ``LLMAttribution`` and ``LLMGradientAttribution``), or,
with a contrast token ``c``, ``log p(y_g | ...) - log p(c | ...)`` ("why Mary rather than
John", Yin & Neubig 2022). Each step is one call of a registered method on the sequence
``x + y_<g`` with a small module that returns that score, so every token-id method of the
registry applies: gradients, input x gradient and Integrated Gradients on the token embeddings
(the IG path moves every position's embedding from the baseline's, ``baseline="zeros"``: token id
0 at every position, Captum's default), occlusion and feature ablation of tokens or spans,
Shapley values over spans (words, sentences), and attention rollout (plain or gradient-weighted)
read at the row of the last position, the one that predicts the token. Steps of path methods run in chunks bounded by the
memory budget (:func:`unveil.set_memory_budget`). Integrated Gradients with a fixed number of steps
and one baseline token id (the default) scores every generated token from shared forward passes
(:mod:`unveil.language._shared_ig`): one forward per path point for a run of tokens and one
backward per token, rather than a forward and a backward per token; the values are the same.

Small language models run fastest on one thread on a shared CPU: a 14-token forward of
SmolLM2-135M took 0.17 s with one thread and 2.8-6.7 s with two on a loaded 2-core machine, so
the calls run with ``threads=1`` by default (the caller's setting is restored afterwards).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..core.explain import explain
from ..core.groups import FeatureGroups
from ..core.hooks import eval_mode
from ..core.registry import get_method
from ..errors import InputError, OptionError
from ._result import GenerationExplanation
from ._shared_ig import shared_ig, takes_embeddings
from ._units import Encoded, Spans, encode_prompt, make_units
from .loading import LanguageModelInfo, check_language_model, token_texts

__all__ = ["DEFAULT_THREADS", "METHODS", "NextTokenScore", "explain_generation", "generate_greedy",
           "torch_threads"]

#: The registry methods that apply to generation, by how their values read.
METHODS: dict[str, tuple[str, ...]] = {
    "gradient": ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
                 "vargrad"),
    "groups": ("feature_ablation", "lime", "exact_shapley", "permutation_shapley", "kernel_shap"),
    "windows": ("occlusion",),
    "attention": ("attention_rollout", "grad_attention_rollout"),
}
_ALL = tuple(m for ms in METHODS.values() for m in ms)


class NextTokenScore(nn.Module):
    """Token ids (N, T) -> (N, 1): ``log p(target)`` at the last position, minus
    ``log p(foil)`` when a foil is given. The objective each generated token is explained by."""

    def __init__(self, lm: nn.Module, target: int, foil: int | None = None, *,
                 keep_last: bool = False) -> None:
        super().__init__()
        self.lm, self.target, self.foil, self.keep_last = lm, int(target), foil, keep_last
        self.training = lm.training  # the wrapper adds no mode of its own

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        kw: dict[str, Any] = {"logits_to_keep": 1} if self.keep_last else {}
        out = self.lm(input_ids=input_ids, use_cache=False, **kw)
        logits: torch.Tensor = out.logits if hasattr(out, "logits") else out[0]
        lp = logits[:, -1].float().log_softmax(-1)
        s = lp[:, self.target]
        if self.foil is not None:
            s = s - lp[:, self.foil]
        return s.unsqueeze(1)


#: Torch intra-op threads of the language calls unless the caller says otherwise (see the
#: module docstring and ``benchmarks/bench_language.py``, which measures it).
DEFAULT_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave the setting alone), then
    restore the caller's setting."""
    saved = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise OptionError(f"threads must be a positive int or None, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _logits(model: nn.Module, ids: torch.Tensor, keep: int | None) -> torch.Tensor:
    kw: dict[str, Any] = {} if keep is None else {"logits_to_keep": keep}
    out = model(input_ids=ids[None], use_cache=False, **kw)
    logits: torch.Tensor = out.logits if hasattr(out, "logits") else out[0]
    return logits[0].float()


@torch.no_grad()
def generate_greedy(model: nn.Module, ids: torch.Tensor, max_new_tokens: int,
                    eos_ids: Sequence[int] = (), *, cache_arg: str | None = None) -> torch.Tensor:
    """Greedy continuation of the prompt ids (P,): at most ``max_new_tokens`` ids, stopping
    after an end-of-sequence id. ``cache_arg`` names the forward's key/value-cache keyword
    (``"cache"`` in recent transformers, ``"past_key_values"`` before); without one every step
    runs the whole sequence again."""
    out = model(input_ids=ids[None], use_cache=cache_arg is not None)
    new: list[int] = []
    while True:
        logits = out.logits if hasattr(out, "logits") else out[0]
        new.append(int(logits[0, -1].argmax()))
        if len(new) >= max_new_tokens or new[-1] in eos_ids:
            break
        past = out.get(cache_arg) if cache_arg is not None and hasattr(out, "get") else None
        if past is None:
            out = model(input_ids=torch.cat([ids, torch.tensor(new)])[None], use_cache=False)
        else:
            out = model(input_ids=torch.tensor([[new[-1]]]), use_cache=True,
                        **{cache_arg: past})  # type: ignore[arg-type]  # cache_arg is not None
    return torch.tensor(new, dtype=torch.long)


def _one_token(tokenizer: Any, foil: str | int, vocab: int) -> int:
    if isinstance(foil, int):
        if not 0 <= foil < vocab:
            raise OptionError(f"contrast token id {foil} is outside the vocabulary [0, {vocab})")
        return foil
    ids = tokenizer.encode(foil, add_special_tokens=False)
    if len(ids) != 1:
        pieces = token_texts(tokenizer, ids)
        raise OptionError(f"contrast {foil!r} is {len(ids)} tokens {pieces}, not one; give a "
                          "single-token foil (mind the leading space: ' John', not 'John')")
    return int(ids[0])


def _continuation(tokenizer: Any, model: nn.Module, enc: Encoded, info: LanguageModelInfo,
                  continuation: str | Sequence[int] | None, max_new_tokens: int | None,
                  stop_at_eos: bool) -> torch.Tensor:
    p = len(enc.tokens)
    if continuation is not None:
        if max_new_tokens is not None:
            raise OptionError("pass either continuation= (a text to explain) or "
                              "max_new_tokens= (to generate one), not both")
        ids = (tokenizer.encode(continuation, add_special_tokens=False)
               if isinstance(continuation, str) else [int(i) for i in continuation])
        if not ids:
            raise InputError("the continuation is empty; give at least one token to explain")
        if max(ids) >= info.vocab_size or min(ids) < 0:
            raise InputError(f"continuation ids must lie in [0, {info.vocab_size})")
        n = len(ids)
    else:
        n = 8 if max_new_tokens is None else max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise OptionError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if info.context is not None and p + n > info.context:
        raise InputError(
            f"the prompt has {p} tokens and {n} more would need {p + n} positions, but the "
            f"model takes at most {info.context}; shorten the prompt or ask for at most "
            f"{max(info.context - p, 0)} new tokens")
    if continuation is not None:
        return torch.tensor(ids, dtype=torch.long)
    return generate_greedy(model, enc.ids, n, info.eos_ids if stop_at_eos else (),
                           cache_arg=info.cache_arg)


def _step_scores(model: nn.Module, full: torch.Tensor, p: int, g: int, tokenizer: Any,
                 info: LanguageModelInfo, foils: list[int] | None
                 ) -> tuple[dict[str, np.ndarray], list[list[tuple[str, float]]]]:
    with torch.no_grad():
        logits = _logits(model, full[: p + g - 1], g if info.keeps_last_logits else None)[-g:]
    lp = logits.log_softmax(-1)
    tgt = full[p:]
    rows = torch.arange(g)
    scores = {"log_prob": lp[rows, tgt], "prob": lp[rows, tgt].exp(),
              "entropy": -(lp.exp() * lp).sum(-1)}
    if foils is not None:
        fp = lp[rows, torch.tensor(foils)].exp()
        scores["foil_prob"], scores["prob_diff"] = fp, scores["prob"] - fp
    top = lp.exp().topk(min(5, lp.shape[-1]), dim=-1)
    alts = [list(zip(token_texts(tokenizer, top.indices[i].tolist()), top.values[i].tolist()))
            for i in range(g)]
    return {k: v.double().numpy() for k, v in scores.items()}, alts


def _groups(units: list[tuple[int, int]], length: int, stop: int) -> FeatureGroups:
    """One group per unit that ends before ``stop`` (positions after it are never removed)."""
    labels = torch.full((1, length), -1, dtype=torch.long)
    n = 0
    for u, (a, b) in enumerate(units):
        if b <= min(length, stop):
            labels[0, a:b], n = u, u + 1
    return FeatureGroups(n, [f"unit {u}" for u in range(n)], "custom", labels=labels)


def explain_generation(
    model: nn.Module, tokenizer: Any, prompt: str, *,
    max_new_tokens: int | None = None,
    continuation: str | Sequence[int] | None = None,
    method: str = "integrated_gradients",
    contrast: str | int | None = None,
    chat: bool = False,
    spans: Spans = "tokens",
    stop_at_eos: bool = True,
    sources: Literal["all", "prompt"] = "all",
    threads: int | None = DEFAULT_THREADS,
    **options: Any,
) -> GenerationExplanation:
    """Generate (greedily) or take a continuation, and attribute each of its tokens to the
    prompt and to the tokens before it.

    Parameters
    ----------
    model, tokenizer
        A Hugging Face causal LM (e.g. ``LlamaForCausalLM``) and its tokenizer.
    prompt : str
        The text the model continues (or the user's message with ``chat=True``).
    max_new_tokens : int, optional
        Tokens to generate (default 8); generation stops early at an end-of-sequence token
        unless ``stop_at_eos=False``.
    continuation : str or sequence of int, optional
        A continuation to explain instead of generating one (teacher forcing).
    method : str
        A registry name among :data:`METHODS` (default ``"integrated_gradients"``).
    contrast : str or int, optional
        A single-token foil: explain ``log p(token) - log p(foil)`` at every step.
    chat : bool
        Wrap the prompt in the tokenizer's chat template as a user message (template tokens
        are kept and marked ``"template"``).
    spans : ``"tokens"``, ``"words"`` or ``"sentences"``
        The units of the prompt: perturbation and Shapley methods remove whole units;
        gradient values are summed over each unit's tokens.
    sources : ``"all"`` or ``"prompt"``
        What a generated token is attributed to: the prompt and the tokens generated before it
        (default), or the prompt only, the earlier generated tokens held fixed: the IG path
        then keeps them at their values (Captum's ``LLMGradientAttribution``) and
        perturbation methods never remove them.
    threads : int or None
        Torch intra-op threads during the call (default 1, the fastest for small models on a
        shared CPU); ``None`` leaves torch's setting alone.
    **options
        The method's options (``n_steps=``, ``baseline=``, ``mask_id=``, ``batch_size=``,
        ``n_samples=``, ``seed=`` ...), as :func:`unveil.explain` takes them.

    Returns
    -------
    GenerationExplanation
        ``values`` (G, U) per generated token and source unit, step scores, and HTML.
    """
    if method not in _ALL:
        get_method(method)  # an unknown name: the registry's error suggests close ones
        raise OptionError(f"{method!r} does not apply to generation; use one of "
                          f"{', '.join(_ALL)}")
    for key in ("target", "groups"):
        if key in options:
            raise OptionError(f"{key}= is set by explain_generation (the generated tokens, the "
                              "spans); use contrast= or spans= instead")
    info = check_language_model(model, tokenizer)
    enc = encode_prompt(tokenizer, prompt, chat=chat)
    if spans != "tokens" and method in METHODS["windows"]:
        raise OptionError(f"{method!r} slides a window over tokens; for spans={spans!r} use "
                          "feature_ablation or a Shapley method")
    if sources not in ("all", "prompt"):
        raise OptionError(f"sources must be 'all' or 'prompt', got {sources!r}")
    base_id = _base_id(options.get("baseline"), sources)
    t0 = time.perf_counter()
    with torch_threads(threads), eval_mode(model):
        gen = _continuation(tokenizer, model, enc, info, continuation, max_new_tokens,
                            stop_at_eos)
        p, g = len(enc.tokens), len(gen)
        foils = None if contrast is None else [_one_token(tokenizer, contrast, info.vocab_size)] * g
        units = make_units(enc, g, spans)
        full = torch.cat([enc.ids, gen])
        t1 = time.perf_counter()
        scores, alts = _step_scores(model, full, p, g, tokenizer, info, foils)
        values = np.full((g, len(units)), np.nan)
        outs, base, delta = (np.full(g, np.nan) for _ in range(3))
        n_evals = 0
        grouped = method in METHODS["groups"] and (spans != "tokens" or sources == "prompt")
        stop = p if sources == "prompt" else p + g
        fast = _shared_options(method, options, model)
        if fast is not None:
            res = shared_ig(model, full, p, foils, prompt_only=sources == "prompt", keeps_last=info.keeps_last_logits,
                            **fast)
            for step in range(g):
                for u, (a, b) in enumerate(units):
                    if b <= min(p + step, stop):
                        values[step, u] = res.values[step, a:b].sum()
            outs, base, delta, n_evals = (res.outputs, res.baseline_outputs, res.delta,
                                          res.n_evals)
            options = {**options, "segments": " ".join(f"{a}-{b}" for a, b in res.segments)}
        for step in range(g if fast is None else 0):
            length = p + step
            obj = NextTokenScore(model, int(gen[step]), None if foils is None else foils[step],
                                 keep_last=info.keeps_last_logits)
            call = dict(options)
            if grouped:
                call["groups"] = _groups(units, length, stop)
            if method in METHODS["attention"]:  # the row of the position that predicts
                call.setdefault("query", length - 1)
                call.setdefault("prefix_tokens", 0)
            if base_id is not None and method == "integrated_gradients":
                ref = full[None, :length].clone()
                ref[:, :p] = base_id
                call["baseline"] = ref
            exp = explain(obj, full[None, :length], method=method, target=0, **call)
            v = np.asarray(exp.values, dtype=np.float64).reshape(-1)
            for u, (a, b) in enumerate(units):
                if b <= min(length, stop):
                    values[step, u] = v[a] if grouped else v[a:b].sum()
            outs[step] = _first(exp.outputs)
            base[step] = _first(exp.baseline_outputs)
            delta[step] = _first(exp.delta)
            n_evals += int(exp.n_evals)
    kinds = ["prompt" if u else "template" for u in enc.user] + ["generated"] * g
    return GenerationExplanation(
        tokens=enc.tokens + token_texts(tokenizer, gen.tolist()), kinds=kinds,
        ids=full.numpy(), n_prompt=p, units=units, values=values, method=method,
        objective="log_prob" if foils is None else "log_prob_diff", scores=scores,
        foils=None if foils is None else token_texts(tokenizer, foils),
        outputs=outs, baseline_outputs=None if np.isnan(base).all() else base,
        delta=None if np.isnan(delta).all() else delta, alternatives=alts,
        params={"spans": spans, "chat": chat, "threads": threads,
                "generated": continuation is None, "sources": sources,
                **{k: v for k, v in options.items() if isinstance(v, (int, float, str, bool))}},
        prompt=prompt, n_evals=n_evals,
        timings={"generate": t1 - t0, "attribute": time.perf_counter() - t1},
    )


def _shared_options(method: str, options: dict[str, Any], model: nn.Module
                    ) -> dict[str, Any] | None:
    """The options of :func:`shared_ig` when it computes this call (IG with a fixed number of
    steps, one baseline token id, on a model that takes ``inputs_embeds``), else None."""
    if method != "integrated_gradients" or not takes_embeddings(model):
        return None
    if set(options) - {"n_steps", "rule", "baseline", "batch_size", "seed"}:
        return None
    n_steps = options.get("n_steps", 50)
    baseline = options.get("baseline")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        return None  # "auto" (and bad values, which the registry reports) go the general way
    if not (baseline is None or baseline == "zeros"
            or (isinstance(baseline, int) and not isinstance(baseline, bool))):
        return None
    return {"n_steps": n_steps, "rule": options.get("rule", "gausslegendre"),
            "base_id": baseline if isinstance(baseline, int) else 0,
            "batch_size": options.get("batch_size", "auto")}


def _base_id(baseline: Any, sources: str) -> int | None:
    """The token id the prompt moves from when only the prompt is a source."""
    if sources == "all":
        return None
    if baseline is None or (isinstance(baseline, str) and baseline == "zeros"):
        return 0
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        return baseline
    raise OptionError(f"with sources='prompt' the baseline is one token id (or 'zeros': id 0) "
                      f"for the prompt's positions, got {baseline!r}")


def _first(a: Any) -> float:
    if a is None:
        return float("nan")
    flat = np.asarray(a, dtype=np.float64).reshape(-1)
    return float(flat[0]) if flat.size else float("nan")
