"""Context managers that touch a model and always undo what they did.

Everything that attaches a hook, changes a mode or a ``requires_grad`` flag, or swaps a module
goes through here, and is undone in ``finally`` so that an exception leaves the model as it was.
Several threads may explain one model at once: a hook attached here acts only on the forward
passes of the thread that attached it, and overlapping guards restore the flags once, when the
last one ends.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import ModelError

__all__ = [
    "StopForward",
    "capture_outputs",
    "copy_module",
    "eval_mode",
    "first_tensor",
    "forward_hooks",
    "frozen_parameters",
    "get_submodule",
    "layer_name",
    "model_guard",
    "replaced_modules",
]

_TRAIN_WARNED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # by identity; a new model at a freed id warns again


@contextlib.contextmanager
def eval_mode(module: nn.Module, *, warn: bool = True) -> Iterator[None]:
    """Run the block with every submodule in eval mode, restoring each module's flag after.

    A model in training mode would update BatchNorm statistics and make Dropout random, so
    explanations are always computed in eval mode. One warning per model says so.
    """
    flags = [(m, m.training) for m in module.modules()]
    if any(t for _, t in flags):
        if warn and module not in _TRAIN_WARNED:
            _TRAIN_WARNED.add(module)
            warnings.warn(
                "the model is in training mode; unveil explains it in eval mode and restores "
                "the training flags afterwards (call model.eval() to silence this)",
                UserWarning,
                stacklevel=4,
            )
        module.eval()
    try:
        yield
    finally:
        for m, t in flags:
            m.training = t


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter for the block, then restore each flag.

    Gradients with respect to the input then never build weight-gradient graph parts.
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


class _Guarded:
    """The flags of a guarded module, saved by the first guard and restored by the last."""

    def __init__(self, module: nn.Module) -> None:
        self.count = 0
        self.modes = contextlib.ExitStack()
        self.modes.enter_context(eval_mode(module))
        self.frozen = False


_GUARDED: dict[int, _Guarded] = {}
_GUARD_LOCK = threading.Lock()


@contextlib.contextmanager
def model_guard(module: nn.Module | None, *, freeze: bool = True) -> Iterator[None]:
    """Eval mode and (optionally) frozen parameters for the block; both restored afterwards.

    Guards of one module may nest or overlap (several threads): the flags are saved when the
    first begins and restored when the last ends.
    """
    if module is None:
        yield
        return
    with _GUARD_LOCK:
        state = _GUARDED.get(id(module))
        if state is None:
            state = _GUARDED[id(module)] = _Guarded(module)
        if freeze and not state.frozen:
            state.modes.enter_context(frozen_parameters(module))
            state.frozen = True
        state.count += 1
    try:
        yield
    finally:
        with _GUARD_LOCK:
            state.count -= 1
            if state.count == 0:
                del _GUARDED[id(module)]
                state.modes.close()


@contextlib.contextmanager
def forward_hooks(
    hooks: list[tuple[nn.Module, Callable[..., Any]]], *, with_kwargs: bool = False
) -> Iterator[list[RemovableHandle]]:
    """Register forward hooks ``(module, fn)`` for the block; all removed in ``finally``.

    A hook acts on this thread's forward passes only (another thread may run the model too).
    """
    handles: list[RemovableHandle] = []
    try:
        for mod, fn in hooks:
            handles.append(mod.register_forward_hook(_this_thread(fn), with_kwargs=with_kwargs))
        yield handles
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def forward_pre_hooks(
    hooks: list[tuple[nn.Module, Callable[..., Any]]],
) -> Iterator[list[RemovableHandle]]:
    """Register forward pre-hooks ``(module, fn)`` for the block; all removed in ``finally``.

    A hook acts on this thread's forward passes only.
    """
    handles: list[RemovableHandle] = []
    try:
        for mod, fn in hooks:
            handles.append(mod.register_forward_pre_hook(_this_thread(fn)))
        yield handles
    finally:
        for h in handles:
            h.remove()


def _this_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` for forward passes run by the calling thread; a no-op in other threads."""
    owner = threading.get_ident()

    def hook(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        return fn(*args, **kwargs)

    hook._unveil_hook = True  # type: ignore[attr-defined]  # so a copy can drop it (copy_module)
    return hook


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
               "_backward_pre_hooks")


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without the hooks unveil attached to it: another thread may be
    explaining the model at this moment, and its hooks must not run on (or fail in) the copy.
    The user's own hooks are copied as they are."""
    dup = copy.deepcopy(module)
    for m in dup.modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(m, attr, None)
            if hooks:
                for key in [k for k, h in hooks.items() if getattr(h, "_unveil_hook", False)]:
                    del hooks[key]
                    getattr(m, "_forward_hooks_with_kwargs", {}).pop(key, None)
                    getattr(m, "_forward_hooks_always_called", {}).pop(key, None)
    return dup


class StopForward(Exception):
    """Raised from a forward hook to end a pass once everything needed is recorded; the
    caller catches it around the model call (the rest of the network is not run)."""


def first_tensor(out: Any) -> torch.Tensor:
    """The tensor in a layer's output: the output itself, the first item of a tuple or list,
    or a Hugging Face output's ``last_hidden_state``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state  # type: ignore[no-any-return]  # HF model outputs
    raise ModelError(f"a hooked layer returned {type(out).__name__}, which holds no tensor")


@contextlib.contextmanager
def capture_outputs(
    modules: Mapping[str, nn.Module], *, detach: bool = False
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record each named module's output tensor on every forward call inside the block.

    Yields a dict ``name -> [output per call]``; with ``detach=False`` the outputs stay in the
    autograd graph so gradients with respect to them can be taken.
    """
    store: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def make(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            t = first_tensor(out)
            store[name].append(t.detach() if detach else t)

        return hook

    with forward_hooks([(m, make(n)) for n, m in modules.items()]):
        yield store


def layer_name(root: nn.Module | None, layer: str | nn.Module) -> str:
    """The dotted name of ``layer`` in ``root``: a name passes through, a module is looked up by
    identity in ``root.named_modules()``.

    Raises :class:`~unveil.errors.LayerNotFoundError` for a module that is not part of ``root``
    (the message names its type only, never its repr).
    """
    from ..errors import LayerNotFoundError

    if not isinstance(layer, nn.Module):
        return layer
    if root is None:
        raise LayerNotFoundError(
            f"layer= a {type(layer).__name__} module was given, but the model is not a "
            "torch.nn.Module"
        )
    for name, m in root.named_modules(remove_duplicate=False):
        if m is layer:
            return str(name)
    names = [n for n, _ in root.named_modules() if n]
    sample = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    raise LayerNotFoundError(
        f"layer= a {type(layer).__name__} that is not a submodule of this model "
        f"({type(root).__name__}); pass one of its own modules or a dotted name: {sample}"
    )


def get_submodule(root: nn.Module, name: str | nn.Module) -> nn.Module:
    """``root.get_submodule(name)`` with an error that lists the closest existing names; a
    module of ``root`` is accepted too (see :func:`layer_name`)."""
    from ..errors import LayerNotFoundError

    name = layer_name(root, name)
    if name in ("", "."):
        return root
    try:
        return root.get_submodule(name)
    except AttributeError:
        import difflib

        names = [n for n, _ in root.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        sample = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise LayerNotFoundError(
            f"the model has no layer {name!r}.{hint} Layers are dotted names as in "
            f"model.named_modules(): {sample}"
        ) from None


@contextlib.contextmanager
def replaced_modules(root: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[None]:
    """Swap submodules by dotted name for the block and put the originals back in ``finally``.

    Use this only on a copy of the user's model or for wrappers that keep the original inside;
    the originals are restored whatever happens.
    """
    done: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for name, new in replacements.items():
            parent_name, _, attr = name.rpartition(".")
            parent = get_submodule(root, parent_name)
            old = getattr(parent, attr)
            setattr(parent, attr, new)
            done.append((parent, attr, old))
        yield
    finally:
        for parent, attr, old in reversed(done):
            setattr(parent, attr, old)
