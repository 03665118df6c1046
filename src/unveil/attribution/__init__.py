"""Attribution methods. Importing this package registers them all."""

from __future__ import annotations

from ._base import Attributor, Call
from .gradient import Saliency
from .path import IntegratedGradients

__all__ = ["Attributor", "Call", "IntegratedGradients", "Saliency"]
