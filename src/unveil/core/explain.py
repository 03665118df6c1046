"""``explain``: construct a registered method from its declared options and run it."""

from __future__ import annotations

from typing import Any

from .explanation import Explanation
from .model import TargetSpec
from .registry import MethodTable, get_method, list_methods

__all__ = ["explain", "make_explainer", "methods"]


def methods(modality: str | None = None) -> MethodTable:
    """The registered methods (name, family, modalities, needs gradients, options, ...).

    A list of :class:`~unveil.core.registry.MethodInfo` that prints as a table; ``.to_pandas()``
    gives a DataFrame.
    """
    return list_methods(modality)


def make_explainer(model: Any, method: str, **options: Any) -> Any:
    """Construct the registered method ``method`` for ``model`` with its constructor options.

    Call options (``baseline=``, ``layer=`` ...) are refused here: they go to the call.
    """
    info = get_method(method)
    init, call = info.split_options(options)
    if call:
        from ..errors import OptionError

        raise OptionError(
            f"{method!r}: {', '.join(sorted(call))} are options of the call, not of the "
            "constructor; pass them when calling the explainer (or use uv.explain)"
        )
    return info.cls(model, **init)


def explain(
    model: Any, x: Any, *, method: str = "integrated_gradients", target: TargetSpec = "predicted",
    **options: Any,
) -> Explanation:
    """Explain ``model``'s outputs on the batch ``x`` with a registered method.

    ``options`` holds the method's options as it declares them (``uv.options(method)`` lists
    them): constructor options (``n_steps=``, ``n_samples=``, ``batch_size=`` ...) and call
    options (``baseline=``, ``background=``, ``layer=``, ``seed=``, ``feature_names=`` ...).
    An unknown or ill-typed option raises :class:`~unveil.errors.OptionError`.

    >>> import torch
    >>> from torch import nn
    >>> import unveil as uv
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> x = torch.randn(5, 4)
    >>> exp = uv.explain(model, x, method="saliency")
    >>> exp.values.shape  # one value per input feature
    (5, 4)
    >>> bool((exp.targets == model(x).argmax(1).numpy()).all())  # each row's predicted class
    True
    >>> uv.explain(model, x, method="saliency", n_stepz=3)
    Traceback (most recent call last):
        ...
    unveil.errors.OptionError: 'saliency' takes no option 'n_stepz'...
    """
    info = get_method(method)
    init, call = info.split_options(options)
    result: Explanation = info.cls(model, **init)(x, target=target, **call)
    return result
