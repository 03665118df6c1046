"""Language models: what happens inside a Hugging Face causal LM, read through forward hooks on
its own modules (no conversion).

* :func:`logit_lens`, :func:`train_tuned_lens` — what the residual stream predicts after each layer;
* :func:`direct_logit_attribution` — each head's and MLP's direct share of a logit difference;
* :func:`activation_patching`, :func:`attribution_patching` — which components carry a behaviour;
* :func:`head_scores` — previous-token, duplicate-token and induction heads;
* :mod:`unveil.language.sae` — sparse autoencoders on a layer's activations.

Layers are found as ``model.model.layers`` (Llama, Mistral, Qwen, SmolLM), ``model.transformer.h``
(GPT-2) or ``model.gpt_neox.layers``; pass ``layers=`` or ``parts=DecoderParts(...)`` otherwise.
"""

from ._residual import DecoderParts, find_parts
from .heads import DirectLogitAttribution, HeadScores, direct_logit_attribution, head_scores
from .lens import LensResult, TunedLens, logit_lens, train_tuned_lens
from .patching import PatchingResult, activation_patching, attribution_patching

__all__ = ["DecoderParts", "DirectLogitAttribution", "HeadScores", "LensResult", "PatchingResult",
           "TunedLens", "activation_patching", "attribution_patching", "direct_logit_attribution",
           "find_parts", "head_scores", "logit_lens", "train_tuned_lens"]
