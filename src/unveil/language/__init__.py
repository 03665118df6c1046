"""Language models: explain what a causal LM generated, token by token.

:func:`explain_generation` generates (greedily) or takes a continuation and attributes each
generated token to the prompt and the tokens before it with the registry's token-id methods,
optionally against a contrast token; :class:`GenerationExplanation` holds the result (a
sources x generated heat map in ``_repr_html_``, ``save`` to ``.html`` or ``.json``).
:func:`check_language_model` checks a (model, tokenizer) pair; :func:`load_language_model`
loads ``zoo:smollm2`` or a local folder.

>>> import unveil as uv
>>> model, tok = uv.zoo.language.smollm2()                                  # doctest: +SKIP
>>> res = uv.explain_generation(model, tok, "The capital of France is",
...                             max_new_tokens=3, n_steps=32)             # doctest: +SKIP
>>> res.top_sources(0)                                                  # doctest: +SKIP
"""

from __future__ import annotations

from ._result import GenerationExplanation, Source, load_generation
from .generation import METHODS, NextTokenScore, explain_generation, generate_greedy
from .loading import LanguageModelInfo, check_language_model, load_language_model, token_texts

__all__ = [
    "GenerationExplanation",
    "LanguageModelInfo",
    "METHODS",
    "NextTokenScore",
    "Source",
    "check_language_model",
    "explain_generation",
    "generate_greedy",
    "load_generation",
    "load_language_model",
    "token_texts",
]
