"""The dashboard's language-model routes: "why this response" (generate and attribute each
generated token to the prompt), and "inside the model" (logit lens, activation patching, head
scores) on any causal LM the dashboard serves — the zoo's SmolLM2 and induction transformer, or
a user's Hugging Face model.

Prompts are capped in characters by the schema and in tokens here (a 422 naming the limit);
the work runs on the pool's threads within the time budget.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import numpy as np
import torch
from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from ..errors import UnveilError
from ..frontends.lm import CAUSAL_LM
from ._lm import ServedLM, served_lm
from ._routes import _BUSY, _ERRORS, ModelName
from ._schemas_language import (
    GENERATION_METHODS,
    MAX_NEW_TOKENS,
    CheckedOut,
    GenerateRequest,
    GenerateResponse,
    GenerationOut,
    HeadsRequest,
    HeadsResponse,
    LanguageInfoOut,
    LensRequest,
    LensResponse,
    PatchExampleOut,
    PatchRequest,
    PatchResponse,
)
from ._state import ApiError, Entry, Store
from ._work import Work

__all__ = ["DEFAULT_METHOD", "MAX_INSIDE_TOKENS", "MAX_PROMPT_TOKENS", "language_router"]

T = TypeVar("T")
#: The default attribution: one backward pass per generated token.
DEFAULT_METHOD = "input_x_gradient"
#: Most prompt tokens for generation attribution.
MAX_PROMPT_TOKENS = 256
#: Most tokens for the lens and patching (the lens holds layers x positions x vocabulary logits).
MAX_INSIDE_TOKENS = 48
PageId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]
_ADVICE = ("Ask for fewer new tokens, a shorter prompt or a cheaper method (input x gradient, "
           "saliency); perturbation and Shapley methods run the model many times per token.")

_IOI = PatchExampleOut(clean="When Mary and John went to the store, John gave a drink to",
                       corrupted="When Mary and John went to the store, Mary gave a drink to",
                       target=" Mary", foil=" John")


_THREADS_LOCK = threading.Lock()
_THREADS: list[int] = [0, 0]  # jobs inside one_thread(), the torch threads before the first


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread while any language job runs (small LMs run fastest so on a
    shared CPU: see :mod:`unveil.language.generation`); the setting is restored when the last ends."""
    with _THREADS_LOCK:
        if _THREADS[0] == 0:
            _THREADS[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS[0] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS[0] -= 1
            if _THREADS[0] == 0:
                torch.set_num_threads(_THREADS[1])


def _ids_example(vocab: int) -> tuple[list[str], PatchExampleOut]:
    """A repeated run of ids (an induction head continues it) and a pair that differs in the
    token the second run should copy."""
    rng = np.random.default_rng(0)
    run = [int(v) for v in rng.choice(np.arange(1, vocab), size=min(6, vocab - 1), replace=False)]
    other = next(v for v in range(1, vocab) if v not in run) if vocab > len(run) + 1 else run[-1]
    first = " ".join(map(str, [0, *run]))
    again = " ".join(map(str, run[:3]))
    prompt = f"{first} {again}"
    changed = " ".join(map(str, [0, *run[:3], other, *run[4:]]))
    return [prompt, " ".join(map(str, [0, *run, *run[:2]]))], PatchExampleOut(
        clean=prompt, corrupted=f"{changed} {again}", target=str(run[3]), foil=str(other))


def _finite(a: Any) -> list[Any]:
    """Rows of a 2-D array as lists, NaN as None."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def language_router(store: Store, work: Work | None = None) -> APIRouter:
    """Routes under ``/api`` for causal language models (other models get a 422)."""
    work = work or Work()
    r = APIRouter(prefix="/api", responses=_ERRORS)
    served: dict[str, ServedLM] = {}
    lock = threading.Lock()

    def lm_of(e: Entry) -> ServedLM:
        if e.modality != CAUSAL_LM:
            raise ApiError(422, f"model {e.name!r} is not a causal language model (it takes "
                                f"{e.modality or 'unknown'} inputs); the language views need a model "
                                "with a next-token head, e.g. unveil serve -m zoo:smollm2")
        with lock:
            if e.name not in served:
                model = store.model(e)
                served[e.name] = served_lm(model, e.tokenizer)
            return served[e.name]

    def prompt_tokens(lm: ServedLM, text: str, limit: int, what: str) -> int:
        if not text.strip():
            raise ApiError(422, f"the {what} is empty; give the text the model should continue")
        n = lm.n_tokens(text)
        if n > limit:
            raise ApiError(422, f"the {what} has {n} tokens; this view takes at most {limit}: shorten it")
        if lm.context is not None and n > lm.context:
            raise ApiError(422, f"the {what} has {n} tokens, but the model takes at most {lm.context}")
        return n

    def page(html: str) -> str:
        return store.add_page(html)

    async def run(job: Callable[[], T], lm: ServedLM, name: str, what: str, advice: str = _ADVICE) -> T:
        def held() -> T:
            with work.hold(name, lm.model), one_thread():
                return job()

        return await work.run(held, what=what, advice=advice)

    @r.get("/models/{model}/language", response_model=LanguageInfoOut)
    def info(model: ModelName) -> LanguageInfoOut:
        e = store.entry(model)
        lm = lm_of(e)
        if lm.ids_only:
            examples, pair = _ids_example(lm.vocab_size)
        else:
            starts = ("What is the capital of France?",) if lm.chat else ()  # a question for a chat model
            examples = [ex for ex in (*starts, "The capital of France is", _IOI.clean) if _known(lm, ex)]
            pair = _IOI
        if e.texts:
            examples = [*e.texts[:8], *examples][:10]
        return LanguageInfoOut(
            name=e.name, ids_only=lm.ids_only, tokenizer=lm.tokenizer_source, chat=lm.chat,
            context=lm.context, vocab_size=lm.vocab_size, n_layers=lm.n_layers, n_heads=lm.n_heads,
            methods=[m for m in GENERATION_METHODS if lm.attention or "attention" not in m],
            default_method=DEFAULT_METHOD,
            max_new_tokens=MAX_NEW_TOKENS if lm.context is None else min(MAX_NEW_TOKENS, lm.context - 1),
            max_prompt_tokens=MAX_PROMPT_TOKENS, max_inside_tokens=MAX_INSIDE_TOKENS,
            examples=examples, patch_example=pair, sites=lm.sites)

    async def lm_async(e: Entry) -> ServedLM:
        return await run_in_threadpool(lm_of, e)  # the first call loads the model: off the event loop

    @r.post("/generate", response_model=GenerateResponse, responses=_BUSY)
    async def generate(req: GenerateRequest) -> GenerateResponse:
        from ..core.registry import get_method
        from ..language import explain_generation
        from ..report.generation import generation_page, generation_summary

        e = store.entry(req.model)
        lm = await lm_async(e)
        n = prompt_tokens(lm, req.prompt, MAX_PROMPT_TOKENS, "prompt")
        chat = lm.chat if req.chat is None else req.chat
        if chat and not lm.chat:
            raise ApiError(422, f"the tokenizer of model {e.name!r} has no chat template; set chat to false "
                                "to continue the prompt as plain text")
        if chat:  # the template's tokens count too
            n = lm.n_tokens(lm.tokenizer.apply_chat_template(
                [{"role": "user", "content": req.prompt}], tokenize=False, add_generation_prompt=True),
                special=False)
        if lm.context is not None and n + req.max_new_tokens > lm.context:
            raise ApiError(422, f"the prompt has {n} tokens{' with the chat template' if chat else ''} and "
                                f"{req.max_new_tokens} more would need {n + req.max_new_tokens} positions, but "
                                f"the model takes at most {lm.context}; ask for at most "
                                f"{max(lm.context - n, 0)} new tokens")
        declared = {o.name for o in get_method(req.method).options}
        options = {k: v for k, v in store.budget.items() if k in declared}
        if "n_samples" in options and req.method in ("kernel_shap", "lime"):
            # sampled coalitions: a few per source unit (a unit is at most a token)
            options["n_samples"] = max(int(options["n_samples"]), 2 * (n + req.max_new_tokens) + 2)
        if req.n_steps is not None:
            if "n_steps" not in declared:
                raise ApiError(422, f"{req.method} takes no n_steps (integrated gradients does); "
                                    "leave it out")
            options["n_steps"] = req.n_steps
        contrast = req.contrast
        if contrast is not None and lm.ids_only and not contrast.strip().isdigit():
            raise ApiError(422, f"this model has no tokenizer: the contrast is a token id from 0 to "
                                f"{lm.vocab_size - 1}, not {contrast!r}")

        def job() -> tuple[Any, list[str], str]:
            res = explain_generation(
                lm.generator, lm.tokenizer, req.prompt, max_new_tokens=req.max_new_tokens,
                method=req.method, contrast=int(contrast) if contrast is not None and lm.ids_only else contrast,
                chat=chat, spans=req.units, sources=req.sources, **options)
            title = f"unveil · {e.name} · why this response ({req.method})"
            return res, generation_summary(res), page(generation_page(res, title=title))

        t0 = time.perf_counter()
        res, summary, pid = await run(job, lm, e.name, f"explaining the generation with {req.method}")
        return GenerateResponse(result=GenerationOut(**res.to_dict()), summary=summary, chat=chat, page=pid,
                                seconds=time.perf_counter() - t0)

    @r.post("/lens", response_model=LensResponse, responses=_BUSY)
    async def lens(req: LensRequest) -> LensResponse:
        from ..language import logit_lens

        e = store.entry(req.model)
        lm = await lm_async(e)
        prompt_tokens(lm, req.prompt, MAX_INSIDE_TOKENS, "prompt")
        target: Any = req.target
        if target is not None and lm.ids_only:
            target = _one_id(lm, target, "target")

        def job() -> tuple[Any, str]:
            res = logit_lens(lm.model, req.prompt, tokenizer=lm.tokenizer, target=target, top_k=req.top_k)
            return res, page(_page(res, f"unveil · {e.name} · logit lens"))

        t0 = time.perf_counter()
        res, pid = await run(job, lm, e.name, "the logit lens", advice="Use a shorter prompt.")
        k = res.top_probs.shape[-1]
        distinct = sorted(set(res.target_ids))
        names = dict(zip(distinct, _labels(lm, distinct), strict=True))
        return LensResponse(
            rows=list(res.rows), tokens=list(res.tokens),
            target_ids=list(res.target_ids), target_tokens=[names[i] for i in res.target_ids],
            target_prob=np.asarray(res.target_prob, dtype=float).tolist(),
            top_tokens=[[list(cell[:k]) for cell in row] for row in res.top_tokens],
            top_probs=np.asarray(res.top_probs, dtype=float).tolist(), kind=res.kind, page=pid,
            seconds=time.perf_counter() - t0)

    @r.post("/patch", response_model=PatchResponse, responses=_BUSY)
    async def patch(req: PatchRequest) -> PatchResponse:
        from ..language import activation_patching, attribution_patching

        e = store.entry(req.model)
        lm = await lm_async(e)
        a = prompt_tokens(lm, req.clean, MAX_INSIDE_TOKENS, "clean prompt")
        b = prompt_tokens(lm, req.corrupted, MAX_INSIDE_TOKENS, "corrupted prompt")
        if a != b:
            raise ApiError(422, f"the clean prompt has {a} tokens and the corrupted one {b}: positions are "
                                "patched one to one, so reword one of them to the same length")
        target: Any = _one_id(lm, req.target, "target") if lm.ids_only else req.target
        foil: Any = _one_id(lm, req.foil, "foil") if lm.ids_only else req.foil
        sites: list[str] = list(dict.fromkeys(req.sites))

        def job() -> tuple[Any, str]:
            fn = attribution_patching if req.attribution else activation_patching
            res = fn(lm.model, req.clean, req.corrupted, target=target, foil=foil, tokenizer=lm.tokenizer,
                     sites=sites)
            return res, page(_page(res, f"unveil · {e.name} · {res.kind} patching"))

        t0 = time.perf_counter()
        res, pid = await run(job, lm, e.name, f"{'attribution' if req.attribution else 'activation'} patching",
                             advice="Patch the residual stream only, use shorter prompts, or tick first-order "
                                    "(attribution patching: one backward pass).")
        names = _labels(lm, [res.target, res.foil])
        return PatchResponse(
            kind=res.kind, sites=sites, resid=None if res.resid is None else _finite(res.resid),
            heads=None if res.heads is None else _finite(res.heads),
            mlp=None if res.mlp is None else _finite(res.mlp),
            clean_diff=float(res.clean_diff), corrupted_diff=float(res.corrupted_diff),
            tokens=list(res.tokens),
            corrupted_tokens=_labels(lm, _ids(lm, req.corrupted)),
            target=int(res.target), foil=int(res.foil), target_text=names[0], foil_text=names[1],
            n_forward=int(res.n_forward),
            faithfulness=None if res.faithfulness is None or not np.isfinite(res.faithfulness)
            else float(res.faithfulness),
            checked=[CheckedOut(site=c[0], layer=int(c[1]), index=int(c[2]), approximation=float(x),
                                exact=float(y)) for c, x, y in res.checked if np.isfinite(x) and np.isfinite(y)],
            page=pid, seconds=time.perf_counter() - t0)

    @r.post("/heads", response_model=HeadsResponse, responses=_BUSY)
    async def heads(req: HeadsRequest) -> HeadsResponse:
        from ..language import head_scores

        e = store.entry(req.model)
        lm = await lm_async(e)
        if lm.context is not None and 2 * req.half + 1 > lm.context:
            raise ApiError(422, f"half={req.half} makes sequences of {2 * req.half + 1} tokens; the model "
                                f"takes at most {lm.context}")
        bos = getattr(lm.tokenizer, "bos_token_id", None)
        bos = bos if isinstance(bos, int) else -1

        def job() -> tuple[Any, str]:
            res = head_scores(lm.model, half=req.half, n_sequences=req.n_sequences, bos_token_id=bos,
                              vocab_size=lm.vocab_size)
            return res, page(_page(res, f"unveil · {e.name} · head scores"))

        t0 = time.perf_counter()
        res, pid = await run(job, lm, e.name, "the head scores", advice="Use shorter or fewer sequences.")
        return HeadsResponse(previous_token=np.asarray(res.previous_token, dtype=float).tolist(),
                             duplicate_token=np.asarray(res.duplicate_token, dtype=float).tolist(),
                             induction=np.asarray(res.induction, dtype=float).tolist(), half=res.half,
                             n_sequences=res.n_sequences, page=pid, seconds=time.perf_counter() - t0)

    @r.get("/language/pages/{page}", response_class=HTMLResponse)
    def language_page(page: PageId) -> HTMLResponse:
        return HTMLResponse(store.page(page), headers={
            "Content-Disposition": 'attachment; filename="unveil-language.html"'})

    return r


def _ids(lm: ServedLM, text: str) -> list[int]:
    """The ids of a patched prompt, as the patching functions encode it (no special tokens)."""
    enc = lm.tokenizer(text, add_special_tokens=False)
    ids = enc["input_ids"] if hasattr(enc, "keys") else enc
    return [int(i) for i in ids]


def _known(lm: ServedLM, text: str) -> bool:
    """Whether the tokenizer spells ``text`` without its unknown-token id (a small word-level
    vocabulary may lack the example's words)."""
    unk = getattr(lm.tokenizer, "unk_token_id", None)
    return unk is None or unk not in _ids(lm, text)


def _labels(lm: ServedLM, ids: list[int]) -> list[str]:
    from ..language import token_texts

    return token_texts(lm.tokenizer, ids)


def _one_id(lm: ServedLM, text: str, what: str) -> int:
    """A token id typed as a number (models without a tokenizer)."""
    try:
        ids = lm.tokenizer.encode(text)
    except UnveilError as exc:
        raise ApiError(422, f"{what}: {exc}") from None
    if len(ids) != 1:
        raise ApiError(422, f"{what} is one token id from 0 to {lm.vocab_size - 1}, got {text!r}")
    return int(ids[0])


def _page(res: Any, title: str) -> str:
    from ..report.html import document

    return document(res.to_html(), title)
