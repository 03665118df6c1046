"""``unveil.explain`` and ``unveil.methods``: the one-call entry points."""

from __future__ import annotations

import inspect
from typing import Any

from .core.explanation import Explanation
from .core.model import TargetSpec
from .core.registry import MethodInfo, get_method, list_methods

__all__ = ["explain", "make_explainer", "methods"]


def methods(modality: str | None = None) -> list[MethodInfo]:
    """The registered methods (name, family, modalities, needs gradients, ...)."""
    return list_methods(modality)


def make_explainer(model: Any, method: str, **options: Any) -> Any:
    """Construct the registered method ``method`` for ``model`` with its options."""
    info = get_method(method)
    return info.cls(model, **options)


def _split_options(cls: type, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options the constructor accepts go to it; the rest go to the call."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]  # reading our own classes' options
    init_names = {
        p.name for p in sig.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    init = {k: v for k, v in options.items() if k in init_names}
    call = {k: v for k, v in options.items() if k not in init_names}
    return init, call


def explain(
    model: Any, x: Any, *, method: str = "integrated_gradients", target: TargetSpec = "predicted", **options: Any
) -> Explanation:
    """Explain ``model``'s outputs on the batch ``x`` with a registered method.

    ``options`` holds the method's options (``n_steps=``, ``n_samples=``, ``seed=``,
    ``batch_size=`` ...) and its call arguments (``baseline=``, ``background=``, ``layer=``).
    """
    info = get_method(method)
    init, call = _split_options(info.cls, options)
    return info.cls(model, **init)(x, target=target, **call)  # type: ignore[no-any-return]
