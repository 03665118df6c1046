"""Language models: why a causal LM generated what it did, and what happens inside it — read
through forward hooks on a Hugging Face model's own modules (no conversion).

Why this response:

* :func:`explain_generation` generates (greedily) or takes a continuation and attributes each
  generated token to the prompt and the tokens before it with the registry's token-id methods,
  optionally against a contrast token; :class:`GenerationExplanation` holds the result (a
  sources x generated heat map in ``_repr_html_``, ``save`` to ``.html`` or ``.json``);
* :func:`check_language_model` checks a (model, tokenizer) pair; :func:`load_language_model`
  loads ``zoo:smollm2``, ``zoo:induction_transformer`` or a local folder.

Inside the model:

* :func:`logit_lens`, :func:`train_tuned_lens` — what the residual stream predicts after each layer;
* :func:`direct_logit_attribution` — each head's and MLP's direct share of a logit difference;
* :func:`activation_patching`, :func:`attribution_patching` — which components carry a behaviour;
* :func:`head_scores` — previous-token, duplicate-token and induction heads;
* :mod:`unveil.language.sae` — sparse autoencoders on a layer's activations.

Layers are found as ``model.model.layers`` (Llama, Mistral, Qwen, SmolLM), ``model.transformer.h``
(GPT-2) or ``model.gpt_neox.layers``; pass ``layers=`` or ``parts=DecoderParts(...)`` otherwise.

>>> import unveil as uv
>>> model, tok = uv.zoo.language.smollm2()                                  # doctest: +SKIP
>>> res = uv.explain_generation(model, tok, "The capital of France is",
...                             max_new_tokens=3, n_steps=32)             # doctest: +SKIP
>>> res.top_sources(0)                                                  # doctest: +SKIP
"""

from __future__ import annotations

from ._residual import DecoderParts, find_parts
from ._result import GenerationExplanation, Source, load_generation
from .generation import METHODS, NextTokenScore, explain_generation, generate_greedy
from .heads import DirectLogitAttribution, HeadScores, direct_logit_attribution, head_scores
from .lens import LensResult, TunedLens, logit_lens, train_tuned_lens
from .loading import LanguageModelInfo, check_language_model, load_language_model, token_texts
from .patching import PatchingResult, activation_patching, attribution_patching

__all__ = [
    "DecoderParts",
    "DirectLogitAttribution",
    "GenerationExplanation",
    "HeadScores",
    "LanguageModelInfo",
    "LensResult",
    "METHODS",
    "NextTokenScore",
    "PatchingResult",
    "Source",
    "TunedLens",
    "activation_patching",
    "attribution_patching",
    "check_language_model",
    "direct_logit_attribution",
    "explain_generation",
    "find_parts",
    "generate_greedy",
    "head_scores",
    "load_generation",
    "load_language_model",
    "logit_lens",
    "token_texts",
    "train_tuned_lens",
]
