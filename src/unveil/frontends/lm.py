"""Causal language models for the front ends: which models are ones (the dashboard's "why this
response" view is for them, not the classifier views), and the zoo's language models by name
(``zoo:smollm2``, ``zoo:induction_transformer``) as :class:`~unveil.frontends.LoadedModel`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .loading import LoadedModel

__all__ = ["CAUSAL_LM", "LANGUAGE_ZOO_NAMES", "is_causal_lm", "language_zoo_model"]

#: The modality the front ends give a causal language model.
CAUSAL_LM = "causal_lm"
#: Zoo names of language models (``zoo:NAME``); they are not in :data:`unveil.zoo.ZOO`.
LANGUAGE_ZOO_NAMES = ("induction_transformer", "smollm2")


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a causal (next-token) language model: a torch module with a
    language-model head (``get_output_embeddings()`` a module with a (vocab, hidden) weight)
    that generates left to right. Hugging Face's ``...ForCausalLM`` and ``...LMHeadModel`` are;
    classifiers, masked LMs (``BertForMaskedLM``) and encoder-decoders are not."""
    if not isinstance(model, nn.Module):
        return False
    get_head = getattr(model, "get_output_embeddings", None)
    try:
        head = get_head() if callable(get_head) else None
    except Exception:  # a model whose head getter is not implemented
        return False
    weight = getattr(head, "weight", None)
    if not isinstance(head, nn.Module) or getattr(weight, "ndim", 0) != 2:
        return False
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return True
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate):
        try:
            return bool(can_generate())
        except Exception:
            return False
    return bool(getattr(config, "is_decoder", False))


def language_zoo_model(name: str) -> LoadedModel | None:
    """The zoo's language model ``name`` loaded (``None`` if the zoo has no such language
    model): SmolLM2-135M-Instruct with its tokenizer, or the 2-layer induction transformer
    (token ids in, no tokenizer)."""
    if name == "induction_transformer":
        from ..zoo.induction import INDUCTION, induction_transformer

        return LoadedModel(induction_transformer(), name=f"zoo:{name}", modality=CAUSAL_LM,
                           description=f"2-layer attention-only transformer trained on repeated random "
                                       f"runs of token ids 0-{INDUCTION.vocab_size - 1} (it forms "
                                       "induction heads); prompts are token ids")
    from ..zoo.language import LANGUAGE_ZOO

    if name not in LANGUAGE_ZOO:
        return None
    entry = LANGUAGE_ZOO[name]
    model, tokenizer = entry.factory()
    return LoadedModel(model, name=f"zoo:{name}", description=entry.description, modality=CAUSAL_LM,
                       tokenizer=tokenizer)
