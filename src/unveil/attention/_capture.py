"""Find a model's self-attention modules and record their probabilities during a forward pass.

Two kinds of models are understood without configuration:

* Hugging Face transformers: the attention classes a model declares in ``_can_record_outputs``
  (``"attentions"``). Their default ``sdpa`` kernel returns no probabilities, so for the duration
  of a call every ``PreTrainedModel`` inside the model is switched to ``eager`` attention and
  switched back afterwards (also on error).
* plain PyTorch: every ``nn.MultiheadAttention``. Its returned weights are averaged over heads
  and detached from the output's graph, so a forward hook recomputes the attention from the
  module's parameters (:mod:`._mha`) and returns that output instead: the model computes the
  same values, and gradients with respect to the probabilities exist. The fused fast path of
  ``nn.TransformerEncoderLayer`` is turned off for the call.

Any other module can be named with ``modules=[...]``: its output must be a tuple whose second
item is the (N, H, T, T) or (N, T, T) probability tensor.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from ..core.batching import BatchSize, map_chunked
from ..core.hooks import forward_hooks, get_submodule
from ..core.model import Model, as_model
from ..errors import ModelError
from ._mha import MHA_ARGS, mha_forward

__all__ = [
    "AttentionMaps", "Site", "attention_context", "capture_attentions", "find_sites",
    "forward_capture",
]


@dataclass(frozen=True)
class Site:
    """One attention module: its dotted name, the module, and how to read its probabilities."""

    name: str
    module: nn.Module
    kind: str  # "mha" (recomputed) or "tuple" (output[index] holds the probabilities)
    index: int = 1


class AttentionMaps(NamedTuple):
    """Captured attention: ``probs`` (N, L, H, T, T) and the module name of each layer."""

    probs: torch.Tensor
    layers: list[str]


def _hf_pretrained() -> type[nn.Module] | None:
    """``transformers.PreTrainedModel`` if transformers is already imported (never imports it)."""
    tf = sys.modules.get("transformers")
    if tf is None:
        return None
    cls = getattr(tf, "PreTrainedModel", None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def _hf_specs(model: nn.Module) -> list[tuple[Any, Any, int, Any]]:
    """``(target_class, class_name, index, layer_name)`` for a HF model's ``"attentions"``."""
    specs = getattr(type(model), "_can_record_outputs", None) or {}
    raw = specs.get("attentions") if isinstance(specs, dict) else None
    if raw is None:
        return []
    out: list[tuple[Any, Any, int, Any]] = []
    for s in raw if isinstance(raw, list) else [raw]:
        if isinstance(s, type):
            out.append((s, None, 1, None))
        elif isinstance(s, str):
            out.append((None, s, 1, None))
        else:  # an OutputRecorder
            out.append((getattr(s, "target_class", None), getattr(s, "class_name", None),
                        int(getattr(s, "index", 1)), getattr(s, "layer_name", None)))
    return out


def _hf_sites(root: nn.Module) -> list[Site]:
    pretrained = _hf_pretrained()
    if pretrained is None:
        return []
    sites: dict[int, Site] = {}  # by module: nested HF models list the same modules again
    for prefix, hf in root.named_modules():
        if not isinstance(hf, pretrained):
            continue
        for cls, cname, index, lname in _hf_specs(hf):
            for name, m in hf.named_modules():
                full = f"{prefix}.{name}" if prefix else name
                hit = (cls is not None and isinstance(m, cls)) or (
                    cname is not None and name.endswith(cname))
                if hit and (lname is None or f".{lname.strip('.')}." in f".{name}."):
                    sites.setdefault(id(m), Site(full, m, "tuple", index))
    return list(sites.values())


def find_sites(root: nn.Module, modules: Sequence[str] | None = None) -> list[Site]:
    """The self-attention modules of ``root``, found automatically or named in ``modules``."""
    if modules is not None:
        named = [(n, get_submodule(root, n)) for n in modules]
        return [Site(n, m, "mha" if isinstance(m, nn.MultiheadAttention) else "tuple")
                for n, m in named]
    sites = _hf_sites(root)
    seen = {id(s.module) for s in sites}
    for name, m in root.named_modules():
        if isinstance(m, nn.MultiheadAttention) and id(m) not in seen:
            sites.append(Site(name, m, "mha"))
    if not sites:
        raise ModelError(
            f"found no attention modules in {type(root).__name__}: unveil recognises "
            "nn.MultiheadAttention and Hugging Face transformers; pass modules=['dotted.name', "
            "...] naming modules whose output is a tuple (output, probabilities)"
        )
    return sites


def _configs(root: nn.Module) -> list[Any]:
    """Every Hugging Face config inside ``root`` (model configs and their sub-configs)."""
    pretrained = _hf_pretrained()
    if pretrained is None:
        return []
    found: dict[int, Any] = {}
    todo = [m.config for m in root.modules() if isinstance(m, pretrained)]
    while todo:
        cfg = todo.pop()
        if id(cfg) in found:
            continue
        found[id(cfg)] = cfg
        for key in getattr(cfg, "sub_configs", None) or {}:
            sub = getattr(cfg, key, None)
            if sub is not None:
                todo.append(sub)
    return list(found.values())


@contextlib.contextmanager
def attention_context(root: nn.Module | None) -> Iterator[None]:
    """Eager attention for Hugging Face models, no fused fast path for PyTorch encoders.

    Every change (each config's attention implementation, the global MHA fast-path flag) is
    undone in ``finally``.
    """
    if root is None:
        yield
        return
    saved = [(cfg, getattr(cfg, "_attn_implementation_internal", None)) for cfg in _configs(root)]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    pretrained = _hf_pretrained()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        if pretrained is not None:
            for m in root.modules():
                cfg: Any = getattr(m, "config", None)
                if isinstance(m, pretrained) and cfg._attn_implementation != "eager":
                    setter = getattr(m, "set_attn_implementation", None)
                    if callable(setter):
                        setter("eager")
                    else:  # older transformers: the config attribute is read at each forward
                        cfg._attn_implementation = "eager"
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for cfg, value in saved:
            cfg._attn_implementation_internal = value


def _tuple_hook(site: Site, store: list[tuple[str, torch.Tensor]], detach: bool) -> Callable[..., None]:
    def hook(_m: nn.Module, _args: Any, out: Any) -> None:
        p = out[site.index] if isinstance(out, (tuple, list)) and len(out) > site.index else None
        if not isinstance(p, torch.Tensor):
            raise ModelError(
                f"attention module {site.name!r} ({type(site.module).__name__}) returned no "
                "attention probabilities: its attention implementation gives none (e.g. sdpa or "
                "flash attention). Load the model with attn_implementation='eager'"
            )
        store.append((site.name, p.detach() if detach else p))

    return hook


def _mha_hook(site: Site, store: list[tuple[str, torch.Tensor]], detach: bool) -> Callable[..., Any]:
    def hook(m: nn.Module, args: Any, kwargs: dict[str, Any], out: Any) -> Any:
        call = dict(zip(MHA_ARGS, args))
        call.update(kwargs)
        assert isinstance(m, nn.MultiheadAttention)
        new_out, probs = mha_forward(m, call)
        store.append((site.name, probs.detach() if detach else probs))
        if detach:
            return None
        return (new_out, *tuple(out)[1:])  # downstream now depends on ``probs``

    return hook


def _select(
    store: list[tuple[str, torch.Tensor]], n: int
) -> tuple[list[torch.Tensor], list[str]]:
    """The self-attention maps in the order they ran, each (n, H, T, T)."""
    maps, names = [], []
    for name, p in store:
        p = p.unsqueeze(1) if p.dim() == 3 else p
        if p.dim() != 4 or p.shape[0] != n:
            raise ModelError(
                f"attention module {name!r} gave probabilities of shape {tuple(p.shape)}; "
                f"expected (N, heads, T, T) or (N, T, T) with N = {n}"
            )
        if p.shape[-1] == p.shape[-2]:  # cross-attention maps (T != S) are not rolled out
            maps.append(p)
            names.append(name)
    if not maps:
        raise ModelError("the model ran no self-attention module during its forward pass")
    shapes = {tuple(p.shape) for p in maps}
    if len(shapes) > 1:
        raise ModelError(
            f"self-attention layers disagree in shape {sorted(shapes)}; name the modules of one "
            "stack with modules=[...]"
        )
    return maps, names


def _track_inputs(_m: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
    """Pre-hook: give the first attention module inputs that require grad.

    The model's parameters are frozen and token ids carry no gradient, so nothing would be
    tracked. The first attention module to run gets detached copies of its floating inputs that
    require grad; every later module's inputs then derive from them, so the probabilities of
    every layer are in the graph of the scores with all their downstream paths intact.
    """
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if any(a.requires_grad for a in tensors if a.is_floating_point()):
        return None
    copies: dict[int, torch.Tensor] = {}

    def swap(a: Any) -> Any:
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            return a
        if id(a) not in copies:
            copies[id(a)] = a.detach().requires_grad_(True)
        return copies[id(a)]

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}


def forward_capture(
    model: Model, x: torch.Tensor, sites: list[Site], *, grad: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor], list[str]]:
    """One forward pass of ``model`` on ``x`` recording attention.

    Returns the scores (N, K) or (N,), the probabilities of each self-attention layer in the
    order they ran ((N, H, T, T) each) and the layer names. With ``grad=True`` (run under
    ``torch.enable_grad()``) the probabilities are in the graph of the scores, so
    ``torch.autograd.grad(scores, maps)`` works; otherwise they are detached. Call inside
    :func:`attention_context`.
    """
    store: list[tuple[str, torch.Tensor]] = []
    plain = [(s.module, _tuple_hook(s, store, not grad)) for s in sites if s.kind == "tuple"]
    mha = [(s.module, _mha_hook(s, store, not grad)) for s in sites if s.kind == "mha"]
    with contextlib.ExitStack() as stack:
        if grad:
            for s in sites:
                h = s.module.register_forward_pre_hook(_track_inputs, with_kwargs=True)
                stack.callback(h.remove)
        stack.enter_context(forward_hooks(plain))
        stack.enter_context(forward_hooks(mha, with_kwargs=True))
        out = model.forward(x)
    maps, names = _select(store, x.shape[0])
    return out, maps, names


def capture_attentions(
    model: Any,
    inputs: Any,
    *,
    modules: Sequence[str] | None = None,
    batch_size: BatchSize = "auto",
) -> AttentionMaps:
    """The attention probabilities of every self-attention layer of ``model`` on ``inputs``.

    Parameters
    ----------
    model : nn.Module
        A Hugging Face model (any attention implementation; eager is used for the call), a
        module built from ``nn.MultiheadAttention``, or one whose attention modules are named in
        ``modules``.
    inputs : Tensor or array
        A batch: token ids (N, T) or images (N, C, H, W).
    modules : list of str, optional
        Dotted names of attention modules returning ``(output, probabilities)``.
    batch_size : int or "auto"
        Rows per forward pass.

    Returns
    -------
    AttentionMaps
        ``probs`` (N, L, H, T, T), rows summing to one, first layer first; ``layers`` the module
        name of each layer. The model is left as it was (mode, flags, attention implementation).
    """
    m = as_model(model)
    x = m.prepare(inputs)
    if m.module is None:
        raise ModelError(f"attention lives inside a torch.nn.Module; got {type(model).__name__}")
    sites = find_sites(m.module, modules)
    names: list[str] = []

    def run(a: int, b: int) -> torch.Tensor:
        _, maps, layer_names = forward_capture(m, x[a:b], sites)
        names[:] = layer_names
        return torch.stack(maps, 1)

    with m.guard(), attention_context(m.module), torch.no_grad():
        probs = map_chunked(run, x.shape[0], batch_size=batch_size, model=m,
                            key=("capture_attentions", tuple(x.shape[1:])))
    return AttentionMaps(probs, names)
