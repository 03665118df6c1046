"""Prepared copies of models (copied, canonized, rewired), kept per user model and weights.

Methods that work on a rewritten copy of the user's model (LRP's canonized copy, the receptive
field probe) build it once per model object, parameter version and options, through
:func:`cached`; a new method object for the same model reuses it. An entry is rebuilt when any
parameter or buffer of the model was replaced or changed in place (``load_state_dict``, an
optimizer step, ``p.data.add_``): each tensor's storage pointer and version counter see
replacements and tracked in-place changes, and the sum of each floating tensor sees changes
through ``.data``, which bypass the version counter (a change that leaves every sum exactly as
it was, such as swapping two values through ``.data``, goes unseen).
The store holds the user's model weakly (a garbage-collected model drops its entries), keeps at
most :data:`MAX_PER_MODEL` entries per model (least recently used first out), and is guarded by
a lock.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["MAX_PER_MODEL", "by_identity", "cached", "clear", "param_state", "tensor_key"]

T = TypeVar("T")
MAX_PER_MODEL = 8
_lock = threading.Lock()
_store: weakref.WeakKeyDictionary[nn.Module, OrderedDict[Hashable, tuple[Hashable, Any]]] = (
    weakref.WeakKeyDictionary()
)


def param_state(module: nn.Module) -> tuple[Hashable, ...]:
    """``(storage pointer, version)`` of every parameter and buffer and the sums of the floating
    ones: changes with the weights."""
    tensors = [*module.parameters(), *module.buffers()]
    with torch.no_grad():
        sums = [t.sum(dtype=torch.float64).cpu() for t in tensors if t.is_floating_point()]
        totals = tuple(torch.stack(sums).tolist()) if sums else ()
    return (tuple((t.data_ptr(), t._version) for t in tensors), totals)


class _ByIdentity:
    """A key part equal only to the same live object; holds it weakly."""

    __slots__ = ("_id", "_ref")

    def __init__(self, obj: Any) -> None:
        self._ref = weakref.ref(obj)
        self._id = id(obj)

    def __hash__(self) -> int:
        return self._id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ByIdentity):
            return NotImplemented
        mine = self._ref()
        return mine is not None and mine is other._ref()


def by_identity(obj: Any) -> Hashable:
    """A key part for an option compared by identity (e.g. an unhashable object)."""
    return _ByIdentity(obj)


def tensor_key(t: torch.Tensor) -> Hashable:
    """A key part for a small tensor option, compared by value."""
    d = t.detach().cpu().contiguous()
    return ("tensor", tuple(d.shape), str(d.dtype), str(t.device), d.numpy().tobytes())


def cached(module: nn.Module, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``'s result for ``module`` in its current weights and ``key``, built at most once.

    ``key`` names the method and every option and input property the result depends on. The
    result must not refer to ``module`` itself (it would keep the model alive).

    >>> from torch import nn
    >>> net = nn.Linear(2, 1)
    >>> a = cached(net, ("doc",), lambda: object())
    >>> cached(net, ("doc",), lambda: object()) is a
    True
    >>> _ = net.weight.data.add_(1.0)  # changed weights: built again
    >>> cached(net, ("doc",), lambda: object()) is a
    False
    """
    state = param_state(module)
    with _lock:
        entries = _store.get(module)
        hit = entries.get(key) if entries is not None else None
        if hit is not None and hit[0] == state:
            assert entries is not None
            entries.move_to_end(key)
            return hit[1]  # type: ignore[no-any-return]
    value = build()  # outside the lock: building runs the model; a concurrent duplicate is harmless
    state = param_state(module)  # a model in training mode may update its buffers while built
    with _lock:
        entries = _store.setdefault(module, OrderedDict())
        entries[key] = (state, value)
        entries.move_to_end(key)
        while len(entries) > MAX_PER_MODEL:
            entries.popitem(last=False)
    return value


def clear() -> None:
    """Drop every prepared copy."""
    with _lock:
        _store.clear()
