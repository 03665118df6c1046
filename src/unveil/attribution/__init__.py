"""Attribution methods. Importing this package registers them all."""

from __future__ import annotations

from ._base import Attributor, Call, FirstPass, Partial, refuse_options
from .cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from .deeplift import DeepLift, DeepLiftShap
from .gradient import InputXGradient, Saliency
from .gradient_shap import GradientShap
from .lime import Lime
from .lrp import LRP
from .modified_backward import Deconvnet, GuidedBackprop
from .path import IntegratedGradients
from .perturbation import RISE, FeatureAblation, Occlusion
from .shapley import ExactShapley, KernelShap, PermutationShapley
from .smooth import SmoothGrad, VarGrad

__all__ = [
    "LRP",
    "RISE",
    "AblationCAM",
    "Attributor",
    "Call",
    "Deconvnet",
    "DeepLift",
    "DeepLiftShap",
    "EigenCAM",
    "ExactShapley",
    "FeatureAblation",
    "FirstPass",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientShap",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "InputXGradient",
    "IntegratedGradients",
    "KernelShap",
    "LayerCAM",
    "Lime",
    "Occlusion",
    "Partial",
    "PermutationShapley",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "VarGrad",
    "XGradCAM",
    "refuse_options",
]
