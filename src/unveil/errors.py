"""The exceptions unveil raises.

Every error a user can cause derives from :class:`UnveilError`, so ``except uv.UnveilError``
catches them all. Each also derives from the matching built-in, so generic handlers still work::

    UnveilError
    ├── InputError (ValueError)            bad inputs: rank, shape, dtype, NaN/inf
    │   ├── TargetError                    target missing, malformed or out of range
    │   └── BaselineError                  baseline/background of the wrong shape or kind
    ├── UnknownMethodError (LookupError)   no registered method of that name
    ├── LayerNotFoundError (LookupError)   dotted layer name not in the model
    ├── ModelError (RuntimeError)          the model failed or returned something unusable
    │   ├── NotDifferentiableError         a gradient method on a model without gradients
    │   └── NonFiniteOutputError           the model returned NaN or infinite scores
    ├── OptionError (ValueError)           an option of a method has an invalid value
    └── MissingExtraError (ImportError)    an optional dependency is not installed
"""

from __future__ import annotations

__all__ = [
    "BaselineError",
    "InputError",
    "LayerNotFoundError",
    "MissingExtraError",
    "ModelError",
    "NonFiniteOutputError",
    "NotDifferentiableError",
    "OptionError",
    "TargetError",
    "UnknownMethodError",
    "UnveilError",
]


class UnveilError(Exception):
    """Base class of every error unveil raises on purpose."""


class InputError(UnveilError, ValueError):
    """The inputs do not have the rank, shape, dtype or values the model expects."""


class TargetError(InputError):
    """The target is malformed or out of the model's output range."""


class BaselineError(InputError):
    """A baseline or background set does not fit the inputs."""


class UnknownMethodError(UnveilError, LookupError):
    """No method of that name is registered."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class LayerNotFoundError(UnveilError, LookupError):
    """A dotted layer name does not exist in the model."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelError(UnveilError, RuntimeError):
    """The model raised, or returned an output unveil cannot interpret."""


class NotDifferentiableError(ModelError):
    """A gradient-based method was asked of a model that gives no gradients."""


class NonFiniteOutputError(ModelError):
    """The model returned NaN or infinite scores; ``rows`` are the offending row indices of the
    evaluated batch and ``total`` its size."""

    def __init__(self, rows: list[int], total: int) -> None:
        self.rows, self.total = list(rows), total
        shown = ", ".join(str(r) for r in self.rows[:8]) + (" ..." if len(self.rows) > 8 else "")
        super().__init__(
            f"the model returned NaN or infinite scores for {len(self.rows)} of {total} rows "
            f"(rows {shown}); no explanation of such scores can be trusted. Check the model "
            "(e.g. a division by zero, log of 0, overflow) or the scale of the inputs"
        )

    def shifted(self, offset: int, total: int) -> NonFiniteOutputError:
        """The same error for a chunk that starts at row ``offset`` of ``total`` rows."""
        return NonFiniteOutputError([r + offset for r in self.rows], total)


class OptionError(UnveilError, ValueError):
    """An option passed to a method has an invalid value."""


class MissingExtraError(UnveilError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is needed for this feature but is not installed; "
            f"install it with: pip install 'unveil[{extra}]'"
        ) from exc
