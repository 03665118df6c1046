"""The torchvision stand-in in stubs/: enough for the reference libraries, clear errors beyond."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STUBS = Path(__file__).resolve().parent.parent / "stubs"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script inside kornia
def test_reference_libraries_import(torchvision_stub):
    for name in ("zennit", "zennit.torchvision", "pytorch_grad_cam", "pytorch_grad_cam.sess",
                 "pytorch_grad_cam.utils.image", "quantus", "lucent.optvis.transform",
                 "lucent.optvis.render", "lucent.modelzoo"):
        importlib.import_module(name)


def test_real_spec_and_version(torchvision_stub):
    import torchvision

    spec = importlib.util.find_spec("torchvision")
    assert isinstance(spec, importlib.machinery.ModuleSpec)
    assert spec.origin == str(STUBS / "torchvision" / "__init__.py")
    assert list(spec.submodule_search_locations or []) == [str(STUBS / "torchvision")]
    assert isinstance(torchvision.__version__, str) and torchvision.__version__[0].isdigit()


def test_imported_normally_from_sys_path():
    code = (
        "import importlib.util, torchvision, torchvision.models.resnet as r; "
        "s = importlib.util.find_spec('torchvision'); "
        "print(type(s).__name__, s.origin, type(s.loader).__name__, r.__spec__.name)"
    )
    env = {**os.environ, "PYTHONPATH": str(STUBS)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["ModuleSpec", str(STUBS / "torchvision" / "__init__.py"), "SourceFileLoader",
                   "torchvision.models.resnet"]


def test_normalize_works(torchvision_stub):
    from lucent.optvis.transform import normalize
    from torchvision.transforms import Normalize
    from torchvision.transforms.functional import normalize as fnormalize

    x = torch.rand(2, 3, 5, 4)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    expected = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(Normalize(mean, std)(x), expected)
    torch.testing.assert_close(normalize()(x), expected)  # Lucent's use: one image at a time
    y = x.clone()
    assert fnormalize(y, mean, std, inplace=True) is y
    torch.testing.assert_close(y, expected)
    with pytest.raises(ValueError, match="std evaluated to zero"):
        Normalize([0.0], [0.0])(torch.rand(1, 2, 2))
    with pytest.raises(TypeError, match="float tensor"):
        Normalize([0.0], [1.0])(torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        Normalize([0.0], [1.0])(torch.zeros(2, 2))


def test_everything_else_raises_clearly(torchvision_stub):
    import torchvision
    from torchvision.models.resnet import BasicBlock
    from torchvision.transforms import Compose, ToTensor
    from torchvision.transforms.functional import resize

    with pytest.raises(torchvision.StandInError, match="'torchvision.ops' is not available: "
                       "unveil's torchvision stand-in"):
        torchvision.ops.box_iou  # noqa: B018  # pytorch-grad-cam's use at run time
    with pytest.raises(AttributeError, match="torchvision.datasets"):
        torchvision.datasets  # noqa: B018
    assert not hasattr(torchvision.models, "resnet50")
    for make in (lambda: BasicBlock(1, 1), lambda: Compose([]), ToTensor,
                 lambda: resize(torch.zeros(1, 2, 2), 4)):
        with pytest.raises(torchvision.StandInError, match="stand-in"):
            make()
    with pytest.raises(ImportError, match=r"stubs[/\\]torchvision"):
        from torchvision.transforms import RandomCrop  # noqa: F401
    with pytest.raises(ModuleNotFoundError, match="torchvision.io"):
        importlib.import_module("torchvision.io")
    assert not isinstance(torch.nn.ReLU(), BasicBlock)


def test_not_left_behind():
    """The fixture removes the stand-in after each test (transformers probes find_spec)."""
    assert "torchvision" not in sys.modules or not str(
        getattr(sys.modules["torchvision"], "__file__", "")
    ).startswith(str(STUBS))
    assert str(STUBS) not in sys.path
