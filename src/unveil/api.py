"""``unveil.explain``, ``unveil.methods`` and ``unveil.options``: the core's, with tokenizer
output read as text (token ids, padding mask and token strings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .core.explain import explain as _explain
from .core.explain import make_explainer, methods
from .core.explanation import Explanation
from .core.model import TargetSpec
from .core.registry import options

if TYPE_CHECKING:
    from .language import GenerationExplanation

__all__ = ["explain", "explain_generation", "make_explainer", "methods", "options"]


def explain(
    model: Any, x: Any, *, method: str = "integrated_gradients", target: TargetSpec = "predicted",
    **options: Any,
) -> Explanation:
    """Explain ``model``'s outputs on the batch ``x`` with a registered method.

    ``x`` is a batch (tensor, array, DataFrame: its columns become ``feature_names``) or
    tokenizer output (a ``BatchEncoding`` or a mapping with ``input_ids`` and optionally
    ``attention_mask``, as :func:`unveil.attention` takes it): the ids are explained, a Hugging
    Face model masks the padding itself, and the token strings go to ``exp.meta["tokens"]``
    (shown by ``exp.plot()`` and the HTML, subwords merged into words).

    ``options`` holds the method's options as it declares them (``uv.options(method)`` lists
    them): constructor options (``n_steps=``, ``n_samples=``, ``batch_size=`` ...) and call
    options (``baseline=``, ``background=``, ``layer=``, ``seed=``, ``feature_names=`` ...).
    An unknown or ill-typed option raises :class:`~unveil.errors.OptionError`.
    """
    if not isinstance(x, Mapping):
        return _explain(model, x, method=method, target=target, **options)
    from .text.encoding import read_encoding

    model, ids, _, tokens = read_encoding(model, x)
    exp = _explain(model, ids, method=method, target=target, **options)
    if tokens is not None:
        exp.meta["tokens"] = tokens
    return exp


def explain_generation(model: Any, tokenizer: Any, prompt: str, **options: Any
                       ) -> GenerationExplanation:
    """Generate (or take ``continuation=``) and attribute each generated token to the prompt
    and the tokens before it: :func:`unveil.language.explain_generation`, whose keywords
    (``max_new_tokens``, ``method``, ``contrast``, ``chat``, ``spans``, ``sources``, the
    method's options) this passes on. Loads the language package on first use."""
    from .language.generation import explain_generation as run

    return run(model, tokenizer, prompt, **options)
