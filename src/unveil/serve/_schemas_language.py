"""Request and response bodies of the language routes (``/api/generate``, ``/api/lens``,
``/api/patch``, ``/api/heads``): strict requests with limits, responses as the results'
``to_dict()`` reads (NaN written as null)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool

from ._schemas import _INTEGRAL, Name, _Strict

__all__ = ["CheckedOut", "GenerateRequest", "GenerateResponse", "GenerationOut", "HeadsRequest",
           "HeadsResponse", "LanguageInfoOut", "LensRequest", "LensResponse", "PatchExampleOut",
           "PatchRequest", "PatchResponse", "GENERATION_METHODS", "MAX_NEW_TOKENS", "MAX_PROMPT_CHARS"]

#: Most characters of a prompt (the token limits are checked by the routes).
MAX_PROMPT_CHARS = 2000
#: Most tokens one request may generate.
MAX_NEW_TOKENS = 64

#: The registry methods generation attribution takes (``unveil.language.METHODS``), cheapest first.
GenerationMethod = Literal["input_x_gradient", "saliency", "integrated_gradients", "smoothgrad", "vargrad",
                           "occlusion", "feature_ablation", "attention_rollout", "grad_attention_rollout",
                           "lime", "kernel_shap", "permutation_shapley", "exact_shapley"]
GENERATION_METHODS: tuple[str, ...] = GenerationMethod.__args__  # type: ignore[attr-defined]

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
Token = Annotated[str, Field(min_length=1, max_length=50)]
Site = Literal["resid", "heads", "mlp"]


class GenerateRequest(_Strict):
    """Generate from a causal LM and attribute each generated token to its sources."""

    model: Name
    prompt: Prompt
    chat: Annotated[StrictBool | None, Field(
        description="wrap the prompt in the tokenizer's chat template (default: when it has one)")] = None
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS), _INTEGRAL] = 8
    method: GenerationMethod = "input_x_gradient"
    units: Literal["tokens", "words", "sentences"] = "tokens"
    contrast: Annotated[Token | None, Field(
        description="a one-token foil: explain log p(token) - log p(foil), e.g. ' John'")] = None
    sources: Literal["all", "prompt"] = "all"
    n_steps: Annotated[int, Field(ge=1, le=64), _INTEGRAL] | None = None


class GenerationOut(BaseModel):
    """``GenerationExplanation.to_dict()``: tokens, source units, the (generated x units) values
    (null where a unit comes after the token), step scores and top alternatives."""

    format: str
    prompt: str
    tokens: list[str]
    kinds: list[str]
    ids: list[int]
    n_prompt: int
    units: list[list[int]]
    unit_texts: list[str]
    values: list[list[float | None]]
    method: str
    objective: str
    foils: list[str] | None
    scores: dict[str, list[float | None]]
    outputs: list[float | None] | None
    baseline_outputs: list[float | None] | None
    delta: list[float | None] | None
    alternatives: list[list[tuple[str, float]]]
    params: dict[str, Any]
    n_evals: int
    timings: dict[str, float]


class GenerateResponse(BaseModel):
    """The explained generation, sentences about it, and the id of its report page."""

    result: GenerationOut
    summary: list[str]
    chat: bool
    page: str
    seconds: float


class LensRequest(_Strict):
    """The logit lens on a prompt."""

    model: Name
    prompt: Prompt
    target: Annotated[Token | None, Field(
        description="track this token's probability (default: the model's own prediction)")] = None
    top_k: Annotated[int, Field(ge=1, le=5), _INTEGRAL] = 3


class LensResponse(BaseModel):
    """Rows ``embed, 0 .. L-1`` by prompt positions: each cell's top tokens and the tracked
    token's probability."""

    rows: list[str]
    tokens: list[str]
    target_ids: list[int]
    target_tokens: list[str]
    target_prob: list[list[float]]
    top_tokens: list[list[list[str]]]
    top_probs: list[list[list[float]]]
    kind: str
    page: str
    seconds: float


def _resid() -> list[Site]:
    return ["resid"]


class PatchRequest(_Strict):
    """Activation (or attribution) patching from a clean prompt into a corrupted one."""

    model: Name
    clean: Prompt
    corrupted: Prompt
    target: Token
    foil: Token
    sites: Annotated[list[Site], Field(min_length=1, max_length=3)] = Field(default_factory=_resid)
    attribution: StrictBool = False


class CheckedOut(BaseModel):
    """One component of the faithfulness check: the approximation beside exact patching."""

    site: str
    layer: int
    index: int
    approximation: float
    exact: float


class PatchResponse(BaseModel):
    """Share of ``logit[target] - logit[foil]`` recovered by each component (null: not patched)."""

    kind: str
    sites: list[str]
    resid: list[list[float | None]] | None
    heads: list[list[float | None]] | None
    mlp: list[list[float | None]] | None
    clean_diff: float
    corrupted_diff: float
    tokens: list[str]
    corrupted_tokens: list[str]
    target: int
    foil: int
    target_text: str
    foil_text: str
    n_forward: int
    faithfulness: float | None
    checked: list[CheckedOut]
    page: str
    seconds: float


class HeadsRequest(_Strict):
    """Previous-token, duplicate-token and induction scores of every head."""

    model: Name
    half: Annotated[int, Field(ge=2, le=32), _INTEGRAL] = 10
    n_sequences: Annotated[int, Field(ge=1, le=16), _INTEGRAL] = 4


class HeadsResponse(BaseModel):
    """(layers, heads) scores of each detector, each in [0, 1]."""

    previous_token: list[list[float]]
    duplicate_token: list[list[float]]
    induction: list[list[float]]
    half: int
    n_sequences: int
    page: str
    seconds: float


class PatchExampleOut(BaseModel):
    """A clean/corrupted pair the model is known to tell apart."""

    clean: str
    corrupted: str
    target: str
    foil: str


class LanguageInfoOut(BaseModel):
    """What the language views need to know of a causal LM."""

    name: str
    ids_only: bool
    tokenizer: str
    chat: bool
    context: int | None
    vocab_size: int
    n_layers: int | None
    n_heads: int | None
    methods: list[str]
    default_method: str
    max_new_tokens: int
    max_prompt_tokens: int
    max_inside_tokens: int
    examples: list[str]
    patch_example: PatchExampleOut
    sites: Annotated[list[str], Field(description="what patching can patch in this model (resid, heads, mlp)")]
