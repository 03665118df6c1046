"""A minimal stand-in for ``torchvision``, used only by unveil's tests and benchmarks.

Zennit (``torchvision.models.resnet``), pytorch-grad-cam (``torchvision``,
``torchvision.transforms``, ``torchvision.transforms.functional``) and torch-lucent
(``torchvision.models``, ``torchvision.transforms.Normalize``) import a few torchvision names at
import time; quantus imports them through zennit. Real torchvision cannot be installed beside the
CPU torch build used here, so this package provides exactly those names: ``transforms.Normalize``
works (Lucent calls it); everything else raises :class:`StandInError` with an explanation when it
is used. It is a regular package with a real ``ModuleSpec``.

Never put it on ``sys.path`` for a whole test session: transformers probes
``importlib.util.find_spec("torchvision")`` and would then try to use it.
"""

from __future__ import annotations

from . import models, transforms
from ._standin import StandInError, module_getattr

__version__ = "0.0.0+unveil.standin"
__all__ = ["StandInError", "__version__", "models", "transforms"]

__getattr__ = module_getattr("torchvision")
