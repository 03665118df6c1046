"""``torchvision.models`` stand-in: only the ``resnet`` block classes zennit imports.

``from torchvision.models import *`` (torch-lucent) imports nothing from here.
"""

from __future__ import annotations

from .._standin import module_getattr
from . import resnet  # noqa: F401  # so that torchvision.models.resnet is an attribute

__all__: list[str] = []

__getattr__ = module_getattr("torchvision.models")
