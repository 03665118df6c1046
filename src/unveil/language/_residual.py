"""Access to the inside of a decoder-only language model through forward hooks on its own modules.

A causal LM is read as a stack of decoder layers writing into one residual stream::

    resid[-1] = embeddings                      (the input of layer 0)
    resid[l]  = resid[l-1] + attn_l(...) + mlp_l(...)      (the output of layer l)
    logits    = unembed(final_norm(resid[L-1]))

The attention output is ``o_proj(z)`` with ``z`` the heads' outputs concatenated, so head ``h``
writes ``z[..., h*d:(h+1)*d] @ W_O[h*d:(h+1)*d, :]`` (``W_O`` as (in, out)) and the output bias
once. :func:`find_parts` locates these modules by the names Llama, Mistral, Qwen, SmolLM, GPT-2
and GPT-NeoX use; any other stack is described with :class:`DecoderParts` directly. Nothing here
changes the model outside a ``with`` block: hooks go through :mod:`unveil.core.hooks`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.hooks import first_tensor, forward_hooks, forward_pre_hooks, model_guard
from ..errors import InputError, LayerNotFoundError, ModelError

__all__ = ["DecoderParts", "Patch", "as_ids", "capture", "encode", "find_parts", "frozen_final_norm",
           "head_writes", "logits_of", "run_patched", "token_labels"]

_STACKS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers",
           "transformer.layers", "layers", "h", "blocks")
_ATTN = ("self_attn", "attn", "attention", "self_attention")
_OPROJ = ("o_proj", "c_proj", "dense", "out_proj")
_MLP = ("mlp", "feed_forward", "ffn")
_NORM = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


@dataclass
class DecoderParts:
    """The modules of a decoder-only LM that the inside views hook.

    Attributes
    ----------
    layers : list of nn.Module
        The decoder layers in order; each returns the residual stream (a tensor or a tuple whose
        first item is it).
    final_norm : nn.Module
        The norm applied to the last layer's output before the unembedding (``nn.Identity`` if none).
    unembed : nn.Module
        The output projection; its ``weight`` is (vocab, d_model).
    embed : nn.Module or None
        The token embedding (its output is made differentiable for gradient views).
    attn, o_proj, mlp : lists, one entry per layer
        Each layer's attention module (returning ``(out, weights, ...)`` as Hugging Face's do),
        its output projection (``nn.Linear`` or GPT-2's ``Conv1D``) and MLP (``None`` where a layer
        has none, e.g. an attention-only model).
    n_heads : int
        Query heads per layer (under grouped-query attention the o_proj input is still one slice
        per query head).
    """

    layers: list[nn.Module]
    final_norm: nn.Module
    unembed: nn.Module
    embed: nn.Module | None = None
    attn: list[nn.Module | None] = field(default_factory=list)
    o_proj: list[nn.Module | None] = field(default_factory=list)
    mlp: list[nn.Module | None] = field(default_factory=list)
    n_heads: int = 0

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    def layer_index(self, layer: int, what: str = "layer") -> int:
        """``layer`` as a non-negative index (negative counts from the end), or a clear error."""
        n = self.n_layers
        if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
            raise LayerNotFoundError(
                f"{what}={layer!r} is out of range: this model has {n} decoder layers, so pass an "
                f"integer from 0 to {n - 1} (or -{n} to -1 from the end)")
        return layer % n

    def need_heads(self) -> None:
        """Raise unless each layer's attention output projection and head count are known."""
        if self.n_heads <= 0 or any(o is None for o in self.o_proj) or len(self.o_proj) != self.n_layers:
            raise ModelError(
                "the attention heads of this model were not found (no o_proj/c_proj/dense module "
                "or no num_attention_heads in its config); pass parts=DecoderParts(..., o_proj=[...], "
                "n_heads=...) to describe them")

    def need_mlps(self) -> None:
        """Raise unless at least one layer has a known MLP."""
        if not any(m is not None for m in self.mlp):
            raise ModelError("no MLP modules were found in this model's layers (mlp/feed_forward); "
                             "pass parts=DecoderParts(..., mlp=[...]) to name them")


def _get(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _child(module: nn.Module, names: Sequence[str]) -> nn.Module | None:
    for n in names:
        m = getattr(module, n, None)
        if isinstance(m, nn.Module):
            return m
    return None


def find_parts(model: nn.Module, *, layers: Iterable[nn.Module] | None = None,
               parts: DecoderParts | None = None) -> DecoderParts:
    """Locate the decoder layers, norm, unembedding, attention and MLP modules of ``model``.

    ``parts`` is returned as given; ``layers`` names the decoder stack of an architecture this
    function does not know (the rest is then looked up by the usual names around it).
    """
    if parts is not None:
        return parts
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module causal LM, got {type(model).__name__}")
    stack: list[nn.Module] | None = list(layers) if layers is not None else None
    base: nn.Module = model
    if stack is None:
        for path in _STACKS:
            found = _get(model, path)
            if isinstance(found, nn.ModuleList) and len(found) > 0:
                stack = list(found)
                owner = _get(model, path.rpartition(".")[0]) if "." in path else model
                base = owner if isinstance(owner, nn.Module) else model
                break
    if not stack:
        raise ModelError(
            f"cannot find the decoder layers of {type(model).__name__}: looked for "
            f"{', '.join(_STACKS)}. Pass layers=<the module list of its decoder blocks> (e.g. "
            "layers=model.model.layers) or parts=DecoderParts(...)")
    if layers is not None:  # the module that owns the stack: the final norm is its sibling
        for m in model.modules():
            if any(isinstance(c, nn.ModuleList) and len(c) and c[0] is stack[0] for c in m.children()):
                base = m
                break
    norm = _child(base, _NORM) or _child(model, _NORM)
    get_out = getattr(model, "get_output_embeddings", None)
    unembed = get_out() if callable(get_out) else None
    unembed = unembed if isinstance(unembed, nn.Module) else _child(model, ("lm_head", "embed_out", "unembed"))
    if unembed is None or not isinstance(getattr(unembed, "weight", None), torch.Tensor):
        raise ModelError(f"cannot find the unembedding (lm_head) of {type(model).__name__}; pass "
                         "parts=DecoderParts(..., unembed=...)")
    get_in = getattr(model, "get_input_embeddings", None)
    embed = get_in() if callable(get_in) else None
    embed = embed if isinstance(embed, nn.Module) else _child(base, ("embed_tokens", "wte", "embed_in"))
    attn = [_child(layer, _ATTN) for layer in stack]
    o_proj = [None if a is None else _child(a, _OPROJ) for a in attn]
    mlp = [_child(layer, _MLP) for layer in stack]
    cfg = getattr(model, "config", None)
    heads = next((getattr(cfg, k) for k in ("num_attention_heads", "n_head", "n_heads")
                  if isinstance(getattr(cfg, k, None), int)), 0)
    if not heads and attn and attn[0] is not None:
        heads = int(getattr(attn[0], "num_heads", 0) or getattr(attn[0], "n_heads", 0) or 0)
    return DecoderParts(layers=stack, final_norm=norm if norm is not None else nn.Identity(),
                        unembed=unembed, embed=embed, attn=attn, o_proj=o_proj, mlp=mlp,
                        n_heads=int(heads))


def logits_of(out: Any) -> torch.Tensor:
    """The logits tensor in a model's output (a tensor, ``.logits``, or the first of a tuple)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(f"the model returned {type(out).__name__}, which holds no logits")


def as_ids(ids: Any, what: str = "ids") -> torch.Tensor:
    """Token ids as a (1, T) or (N, T) int64 tensor, or a clear error."""
    t = torch.as_tensor(ids)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise InputError(f"{what} must be integer token ids, got dtype {t.dtype}")
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] == 0:
        raise InputError(f"{what} must be token ids shaped (T,) or (N, T) with T >= 1, got shape "
                         f"{tuple(t.shape)}")
    return t.long()


def o_weight(o_proj: nn.Module) -> torch.Tensor:
    """The output projection's weight as (in, out): ``nn.Linear`` is transposed, ``Conv1D`` not."""
    w = getattr(o_proj, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2:
        raise ModelError(f"the attention output projection {type(o_proj).__name__} has no 2-D weight")
    return w if type(o_proj).__name__ == "Conv1D" else w.T


def head_writes(o_proj: nn.Module, z: torch.Tensor, n_heads: int) -> torch.Tensor:
    """What each head writes into the residual stream: (..., H, d_model) from z (..., H*d_head)."""
    w = o_weight(o_proj)
    d = z.shape[-1] // n_heads
    zh = z.reshape(*z.shape[:-1], n_heads, d)
    return torch.einsum("...hd,hdo->...ho", zh, w.reshape(n_heads, d, w.shape[-1]).to(z.dtype))


@dataclass
class Patch:
    """Replace part of one activation on some batch rows during a forward pass.

    ``site`` is ``"resid"`` (a layer's output), ``"mlp"`` (an MLP's output) or ``"z"`` (the
    attention output projection's input, split by head); ``index`` selects, after the batch rows,
    a position (or ``slice(None)``) and for ``"z"`` a head. ``value`` broadcasts to the selection.
    """

    site: str
    layer: int
    rows: torch.Tensor
    position: int | slice | torch.Tensor
    value: torch.Tensor
    head: int | None = None


def _replace_first(out: Any, new: torch.Tensor) -> Any:
    if isinstance(out, torch.Tensor):
        return new
    if isinstance(out, tuple):
        return (new, *out[1:])
    if isinstance(out, list):
        return [new, *out[1:]]
    raise ModelError(f"a hooked layer returned {type(out).__name__}, which cannot be patched")


def _apply(t: torch.Tensor, patches: Sequence[Patch], n_heads: int) -> torch.Tensor:
    t = t.clone()
    for p in patches:
        if p.head is None:
            t[p.rows, p.position] = p.value.to(t.dtype)
        else:
            d = t.shape[-1] // n_heads
            t[p.rows, p.position, p.head * d:(p.head + 1) * d] = p.value.to(t.dtype)
    return t


def _modules(parts: DecoderParts, site: str) -> list[nn.Module | None]:
    if site == "resid":
        return list(parts.layers)
    if site == "mlp":
        return parts.mlp
    if site in ("z", "attn"):
        return parts.o_proj if site == "z" else parts.attn
    raise ModelError(f"unknown site {site!r}")


@contextlib.contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Ask a Hugging Face model for eager attention (which returns the weights) for the block."""
    cfg = getattr(model, "config", None)
    old = getattr(cfg, "_attn_implementation", None)
    if cfg is None or old in (None, "eager"):
        yield
        return
    try:
        cfg._attn_implementation = "eager"
        yield
    finally:
        cfg._attn_implementation = old


def capture(model: nn.Module, parts: DecoderParts, ids: torch.Tensor, *,
            sites: Sequence[str] = ("resid",), grad: bool = False, patches: Sequence[Patch] = (),
            edits: Sequence[tuple[str, int, Callable[[torch.Tensor], torch.Tensor]]] = (),
            expand: tuple[str, int, int] | None = None, keep: int | None = None,
            ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor | None]]]:
    """Run ``model`` on ``ids`` and record activations: ``(logits, {site: [per layer]})``.

    Sites: ``"embed"`` (one entry: the input of layer 0), ``"resid"`` (each layer's output),
    ``"z"`` (each o_proj input), ``"mlp"`` (each MLP output), ``"attn"`` (each attention pattern,
    (N, H, T, T), computed eagerly). With ``grad=True`` the activations stay in the autograd graph
    (the embedding output is made a leaf that requires grad), so ``torch.autograd.grad`` of a
    function of the logits with respect to them works; the model's parameters stay frozen.
    ``patches`` are applied before recording; ``edits`` ``(site, layer, fn)`` then replace a
    ``"resid"`` or ``"mlp"`` output ``t`` by ``fn(t)`` (e.g. zero ablation, an SAE's reconstruction).

    ``expand=(site, layer, k)`` runs one sequence up to that activation and repeats it ``k`` times
    there (before the patches): the layers below run once instead of ``k`` times, and the rest
    of the network broadcasts the residual stream's batch dimension. ``keep=n`` returns the
    logits of the last ``n`` positions only (a Hugging Face model then unembeds only those).
    """
    store: dict[str, list[torch.Tensor | None]] = {s: [None] * (1 if s == "embed" else parts.n_layers)
                                                   for s in sites}
    post: list[tuple[nn.Module, Callable[..., Any]]] = []
    pre: list[tuple[nn.Module, Callable[..., Any]]] = []
    by_site: dict[tuple[str, int], list[Patch]] = {}
    for p in patches:
        by_site.setdefault((p.site, p.layer), []).append(p)
    edit_by = {(site, layer): fn for site, layer, fn in edits}

    def record(site: str, i: int, t: torch.Tensor) -> None:
        if site in store:
            store[site][i] = t if grad else t.detach()

    def widen(site: str, i: int, t: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if expand is None or (expand[0], expand[1]) != (site, i) or t.shape[0] != 1:
            return t, False
        return t.expand(expand[2], *t.shape[1:]).clone(), True

    def out_hook(site: str, i: int) -> Callable[..., Any]:
        def hook(_m: nn.Module, _args: Any, out: Any) -> Any:
            t, wide = widen(site, i, first_tensor(out))
            todo = by_site.get((site, i))
            if todo:
                t = _apply(t, todo, parts.n_heads)
            edit = edit_by.get((site, i))
            if edit is not None:
                t = edit(t)
            if site == "attn":
                weights = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
                if not isinstance(weights, torch.Tensor):
                    raise ModelError("the attention module returned no attention weights; this "
                                     "model cannot report attention patterns")
                record(site, i, weights)
                return None
            record(site, i, t)
            return _replace_first(out, t) if todo or wide or edit is not None else None
        return hook

    def z_hook(i: int) -> Callable[..., Any]:
        def hook(_m: nn.Module, args: Any) -> Any:
            t, wide = widen("z", i, args[0])
            todo = by_site.get(("z", i))
            if todo:
                t = _apply(t, todo, parts.n_heads)
            record("z", i, t)
            return (t, *args[1:]) if todo or wide else None
        return hook

    def embed_hook(_m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        if isinstance(x, torch.Tensor):
            record("embed", 0, x)

    def leaf_hook(_m: nn.Module, _args: Any, out: Any) -> Any:
        return _replace_first(out, first_tensor(out).detach().requires_grad_(True))

    for site in {*sites, *(p.site for p in patches), *(e[0] for e in edits), *(expand[:1] if expand else ())}:
        if site == "embed":
            continue
        for i, mod in enumerate(_modules(parts, site)):
            if mod is None:
                continue
            if site == "z":
                pre.append((mod, z_hook(i)))
            else:
                post.append((mod, out_hook(site, i)))
    if grad and parts.embed is None:
        raise ModelError("gradients need the token embedding module; pass parts=DecoderParts(embed=...)")
    with contextlib.ExitStack() as stack:
        stack.enter_context(model_guard(model))
        if "attn" in sites:
            stack.enter_context(_eager_attention(model))
        if grad:
            assert parts.embed is not None
            stack.enter_context(forward_hooks([(parts.embed, leaf_hook)]))
        if "embed" in sites:
            stack.enter_context(forward_hooks([(parts.layers[0], embed_hook)], with_kwargs=True))
        stack.enter_context(forward_pre_hooks(pre))
        stack.enter_context(forward_hooks(post))
        stack.enter_context(torch.enable_grad() if grad else torch.no_grad())
        kwargs = {"logits_to_keep": keep} if keep is not None and _accepts(model, "logits_to_keep") else {}
        logits = logits_of(model(ids, **kwargs))
    if keep is not None and logits.shape[1] != keep:
        logits = logits[:, -keep:]
    return logits, store


def _accepts(model: nn.Module, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def run_patched(model: nn.Module, parts: DecoderParts, ids: torch.Tensor,
                patches: Sequence[Patch], *, expand: tuple[str, int, int] | None = None,
                keep: int | None = None) -> torch.Tensor:
    """The logits of ``model`` on ``ids`` with ``patches`` applied (no gradients); see
    :func:`capture` for ``expand`` and ``keep``."""
    logits = capture(model, parts, ids, sites=(), patches=patches, expand=expand, keep=keep)[0]
    if expand is not None and logits.shape[0] != expand[2]:
        raise ModelError(f"the model did not carry a batch of {expand[2]} through its layers (got "
                         f"{logits.shape[0]}); patch with one full forward per batch instead")
    return logits


def frozen_final_norm(parts: DecoderParts, x: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The final norm linearised at ``x``: ``(linear, bias)`` with ``norm(x) == linear(x) + bias``.

    The scale (1/RMS or 1/std of ``x`` per position) is frozen at ``x``, as is standard for
    direct logit attribution; ``linear`` then distributes over a sum of residual-stream parts.
    LayerNorm-like norms also centre; RMSNorm-like ones do not. Raises if the result does not
    reproduce the module's own output (an unknown norm).
    """
    norm = parts.final_norm
    if isinstance(norm, nn.Identity):
        return (lambda t: t), torch.zeros(x.shape[-1], dtype=x.dtype)
    name = type(norm).__name__.lower()
    center = "rms" not in name
    w = getattr(norm, "weight", None)
    b = getattr(norm, "bias", None)
    eps = next((float(getattr(norm, k)) for k in ("eps", "variance_epsilon", "epsilon")
                if isinstance(getattr(norm, k, None), float)), 1e-5)
    xc = x - x.mean(-1, keepdim=True) if center else x
    scale = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)
    weight = w.detach().to(x.dtype) if isinstance(w, torch.Tensor) else torch.ones(x.shape[-1], dtype=x.dtype)
    bias = b.detach().to(x.dtype) if isinstance(b, torch.Tensor) else torch.zeros(x.shape[-1], dtype=x.dtype)

    def linear(t: torch.Tensor) -> torch.Tensor:
        tc = t - t.mean(-1, keepdim=True) if center else t
        return tc * scale * weight

    with torch.no_grad():
        want = norm(x)
    got = linear(x) + bias
    if not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.abs().max()) + 1e-5):
        raise ModelError(f"the final norm {type(norm).__name__} is neither a LayerNorm nor an RMSNorm "
                         "of the usual form (w * x / rms + b), so its scale cannot be frozen")
    return linear, bias


def encode(prompt: Any, tokenizer: Any = None, *, what: str = "prompt") -> torch.Tensor:
    """Token ids (N, T) of a string (through ``tokenizer``) or of ids given as they are."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise InputError(f"{what} is text ({prompt[:30]!r}); pass tokenizer= too, or token ids")
        enc = tokenizer(prompt, return_tensors="pt", **({} if what == "prompt" else {"add_special_tokens": False}))
        ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc
        return as_ids(ids, what)
    return as_ids(prompt, what)


def token_labels(ids: Sequence[int], tokenizer: Any = None) -> list[str]:
    """Display strings of token ids: the words the tokenizer spells (``Ġ``/``▁`` markers as
    spaces), else its tokens, else the ids as text."""
    if callable(getattr(tokenizer, "decode", None)) and callable(getattr(tokenizer, "convert_ids_to_tokens", None)):
        from .loading import token_texts

        return token_texts(tokenizer, ids)
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if callable(convert):
        return [str(t) for t in convert(list(ids))]
    return [str(i) for i in ids]
