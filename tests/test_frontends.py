"""unveil.frontends: the loaders' messages name the caller's settings, not always the CLI's flags;
model specs and weights files fail with one error line and leave ``sys.path`` as it was."""

from __future__ import annotations

import json
import pickle
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from unveil.cli import FLAGS, cli, main
from unveil.errors import InputError, ModelError, TargetError
from unveil.frontends import LoadedModel, Wording, load_inputs, load_model, parse_rows, parse_target


@pytest.fixture
def pickled(tmp_path: Path) -> Path:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "m.pt")
    return tmp_path / "m.pt"


def test_python_callers_read_keyword_arguments(pickled: Path) -> None:
    with pytest.raises(ModelError, match=r"pass allow_pickle=True if you trust it, or give "
                                         r"model='package\.module:factory' weights='FILE\.safetensors'") as exc:
        load_model(str(pickled))
    assert "--" not in str(exc.value)
    with pytest.raises(InputError, match="no inputs given; pass sources='FILE'") as exc2:
        load_inputs([], LoadedModel(torch.nn.Linear(2, 2), name="m"))
    assert "--" not in str(exc2.value)
    with pytest.raises(InputError, match=r"^rows must look like"):
        parse_rows("a:b", 4)


def test_the_cli_wording_names_its_flags(pickled: Path) -> None:
    with pytest.raises(ModelError, match=r"pass --allow-pickle if you trust it, or give "
                                         r"--model package\.module:factory --weights FILE\.safetensors"):
        load_model(str(pickled), wording=FLAGS)
    with pytest.raises(InputError, match="pass --input FILE .* or --input zoo:NAME, or --text"):
        load_inputs([], LoadedModel(torch.nn.Linear(2, 2), name="m"), wording=FLAGS)
    with pytest.raises(TargetError, match="^--target must be"):
        parse_target("dog", ["cat"], wording=FLAGS)


def test_a_caller_without_the_setting_is_not_told_to_use_it(pickled: Path, tmp_path: Path) -> None:
    serve = Wording(cli=True, missing=frozenset({"allow_pickle"}))
    with pytest.raises(ModelError, match="arbitrary code; give --model") as exc:
        load_model(str(pickled), wording=serve)
    assert "pickle" not in str(exc.value).split("arbitrary code")[1]
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"w\.pt is a pickle-based file; convert it to \.safetensors"):
        load_model("torch.nn:Identity", weights=str(tmp_path / "w.pt"), wording=serve)
    assert np.array_equal(parse_rows("1:3", 4), [1, 2])


# --- model specs and weights files, through the CLI's main in a working directory of their own ---

SPECS = """
from torch import nn


def make():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def exits():
    raise SystemExit(0)


def fails():
    raise ValueError("bad config\\nsecond line")


def interrupted():
    raise KeyboardInterrupt


def nothing():
    return None


instance = make()
"""

DIGITS = """
from torch import nn


def make():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 3)).eval()
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory with ``specmods.py`` and ``x.npy`` (2 rows of 4 features)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specmods.py").write_text(SPECS)
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    yield tmp_path
    sys.modules.pop("specmods", None)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI; it must fail with exactly one ``unveil: error:`` line and no traceback."""
    code, _, err = _cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("unveil: error: "), (code, err)
    assert "Traceback" not in err
    return lines[0]


@contextmanager
def _pil_unimported() -> Iterator[None]:
    """PIL out of sys.modules inside the block; afterwards the modules from before, and only them."""
    def ours() -> list[str]:
        return [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]

    saved = {m: sys.modules.pop(m) for m in ours()}
    try:
        yield
    finally:
        for m in ours():
            del sys.modules[m]
        sys.modules.update(saved)


def test_a_folder_in_the_working_directory_does_not_shadow_later_imports(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "PIL").mkdir(parents=True)
    elsewhere.mkdir()
    (work / "PIL" / "__init__.py").write_text("raise RuntimeError('the PIL folder of the working directory')\n")
    (work / "digitmods.py").write_text(DIGITS)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(work / "digit.png")
    monkeypatch.chdir(work)
    monkeypatch.delitem(sys.modules, "digitmods", raising=False)
    before = list(sys.path)
    with _pil_unimported():  # so that reading the PNG imports PIL again
        code, out, err = _cli(capsys, "explain", "-m", "digitmods:make", "-i", "digit.png",
                              "--method", "saliency", "--json")
        assert code == 0, err
        assert Path(sys.modules["PIL"].__file__ or "").parent != work / "PIL"
    assert sys.path == before
    assert len(json.loads(out)["samples"]) == 1
    # the module stays imported: it keeps working from another directory
    monkeypatch.chdir(elsewhere)
    assert isinstance(load_model("digitmods:make").model, torch.nn.Sequential)
    assert sys.path == before
    sys.modules.pop("digitmods", None)


@pytest.mark.parametrize("spec", ["builtins:exit", "os:system", "builtins:print", "builtins:object"])
def test_built_ins_are_refused_before_being_called(capsys: pytest.CaptureFixture[str], workdir: Path,
                                                   spec: str) -> None:
    line = _error_line(capsys, "explain", "-m", spec, "-i", "x.npy", "--method", "saliency")
    assert f"model {spec!r} is a Python built-in, which is never called as a factory" in line


@pytest.mark.parametrize("spec,fragment,cause", [
    ("specmods:exits", "calling the factory 'specmods:exits' without arguments failed: SystemExit: 0",
     SystemExit),
    ("specmods:fails", "calling the factory 'specmods:fails' without arguments failed: ValueError: bad config",
     ValueError),
    ("specmods:nothing", "the factory 'specmods:nothing' returned None; expected a torch.nn.Module, "
                         "a scikit-learn estimator", None),
    ("collections:OrderedDict", "is the class 'OrderedDict', whose instances are not models", None),
    ("specmods:make.__name__", "is an object of type 'str', neither a model nor a factory", None),
])
def test_what_a_factory_raises_or_returns_is_one_error(capsys: pytest.CaptureFixture[str], workdir: Path,
                                                       spec: str, fragment: str, cause: type | None) -> None:
    before = list(sys.path)
    line = _error_line(capsys, "explain", "-m", spec, "-i", "x.npy", "--method", "saliency")
    assert fragment in line and sys.path == before
    with pytest.raises(ModelError, match=re.escape(fragment)) as exc:
        load_model(spec)
    assert (type(exc.value.__cause__) is cause) if cause else exc.value.__cause__ is None


def test_models_factories_and_classes_still_load(workdir: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    assert load_model("specmods:instance").model is sys.modules["specmods"].instance  # as it is
    assert isinstance(load_model("specmods:make").model, torch.nn.Sequential)
    assert isinstance(load_model("torch.nn:Identity").model, torch.nn.Identity)  # a class: called
    assert isinstance(load_model("sklearn.linear_model:LogisticRegression").model, LogisticRegression)
    with pytest.raises(KeyboardInterrupt):
        load_model("specmods:interrupted")


def test_a_module_that_fails_to_import_is_one_error(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    (workdir / "brokenmod.py").write_text("raise SystemExit(3)\n")
    before = list(sys.path)
    line = _error_line(capsys, "explain", "-m", "brokenmod:make", "-i", "x.npy")
    assert "importing module 'brokenmod' for model 'brokenmod:make' failed: SystemExit: 3" in line
    assert sys.path == before and "brokenmod" not in sys.modules
    (workdir / "lazymod.py").write_text("def __getattr__(name):\n    raise RuntimeError('lazy failed')\n")
    line = _error_line(capsys, "explain", "-m", "lazymod:make", "-i", "x.npy")
    assert "getting 'make' from module 'lazymod' failed: RuntimeError: lazy failed" in line
    assert sys.path == before
    sys.modules.pop("lazymod", None)


class _Marker:
    """Unpickling this runs code: it creates the file ``ran``."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (Path("ran").absolute(),))


def _bad_weights(work: Path) -> dict[str, tuple[str, str, bool]]:
    """name -> (file, fragment of the error, with --allow-pickle)."""
    from safetensors.torch import save_file

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    save_file(net.state_dict(), str(work / "good.safetensors"))
    raw = (work / "good.safetensors").read_bytes()
    (work / "cut.safetensors").write_bytes(raw[:-20])
    (work / "text.safetensors").write_text("these are not weights")
    save_file({k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in net.state_dict().items()},
              str(work / "shapes.safetensors"))
    save_file({"0.weight": torch.zeros(8, 4)}, str(work / "names.safetensors"))
    torch.save(net.state_dict(), work / "w.pt")
    (work / "cut.pt").write_bytes((work / "w.pt").read_bytes()[:200])
    torch.save(net, work / "whole.pt")
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, work / "checkpoint.pt")
    with open(work / "code.pkl", "wb") as fh:
        pickle.dump(_Marker(), fh)
    np.savez(work / "w.npz", a=np.ones(2))
    cannot = "is not safetensors or is incomplete; save them with safetensors.torch.save_file"
    return {
        "cut safetensors": ("cut.safetensors", "cannot read the weights in cut.safetensors (SafetensorError: "
                                               "Error while deserializing header: incomplete metadata", False),
        "not safetensors": ("text.safetensors", cannot, False),
        "wrong shapes": ("shapes.safetensors", "shapes differ, 0.weight (9, 4) for (8, 4)", False),
        "wrong names": ("names.safetensors", "do not fit the model: missing ['0.bias', '2.bias'", False),
        "pickle, not allowed": ("w.pt", "w.pt is a pickle-based file; pass --allow-pickle if you trust it", False),
        "code in a pickle, not allowed": ("code.pkl", "code.pkl is a pickle-based file; pass --allow-pickle", False),
        "cut pickle": ("cut.pt", "cannot read the weights in cut.pt (RuntimeError: PytorchStreamReader", True),
        "a whole model": ("whole.pt", "whole.pt (UnpicklingError: Weights only load failed.): the file is "
                                      "incomplete or holds more than a state dict of tensors", True),
        "code in a pickle": ("code.pkl", "code.pkl (UnpicklingError: Weights only load failed.)", True),
        "a checkpoint": ("checkpoint.pt", "checkpoint.pt holds an object of type 'dict' with keys "
                                          "['epoch', 'state_dict'], not a state dict of tensors", True),
        "not a weights file": ("w.npz", "weights must be a .safetensors file, got 'w.npz'", True),
    }


BAD_WEIGHTS = ["cut safetensors", "not safetensors", "wrong shapes", "wrong names", "pickle, not allowed",
               "code in a pickle, not allowed", "cut pickle", "a whole model", "code in a pickle",
               "a checkpoint", "not a weights file"]


@pytest.mark.parametrize("case", BAD_WEIGHTS)
def test_every_bad_weights_file_is_one_error(capsys: pytest.CaptureFixture[str], workdir: Path,
                                            case: str) -> None:
    name, fragment, allow = _bad_weights(workdir)[case]
    line = _error_line(capsys, "explain", "-m", "specmods:make", "--weights", name, "-i", "x.npy",
                       "--method", "saliency", *(["--allow-pickle"] if allow else []))
    assert fragment in line, line
    assert not (workdir / "ran").exists()  # nothing was unpickled that could run code


def test_good_weights_still_load(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    _bad_weights(workdir)
    for args in (("--weights", "good.safetensors"), ("--weights", "w.pt", "--allow-pickle")):
        code, _, err = _cli(capsys, "explain", "-m", "specmods:make", *args, "-i", "x.npy",
                            "--method", "saliency", "--out", "e.npz")
        assert code == 0, err
    good = load_model("specmods:make", weights="good.safetensors").model
    assert torch.equal(good[0].weight, torch.load(workdir / "w.pt")["0.weight"])


def test_a_corrupt_pickled_model_is_one_error(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    torch.save(torch.nn.Linear(4, 3), workdir / "m.pt")
    (workdir / "cut.pt").write_bytes((workdir / "m.pt").read_bytes()[:300])
    line = _error_line(capsys, "explain", "-m", "cut.pt", "--allow-pickle", "-i", "x.npy")
    assert "cannot unpickle cut.pt: RuntimeError: PytorchStreamReader failed" in line


def test_serve_names_only_its_own_options(capsys: pytest.CaptureFixture[str], workdir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvicorn")
    import uvicorn

    def no_server(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the server must not start")

    monkeypatch.setattr(uvicorn, "run", no_server)
    _bad_weights(workdir)
    torch.save(torch.nn.Linear(4, 3), workdir / "m.pt")
    flags = {opt for p in cli.commands["serve"].params for opt in p.opts if opt.startswith("--")}
    assert "--allow-pickle" not in flags
    lines = [_error_line(capsys, "serve", "-m", "m.pt"),
             _error_line(capsys, "serve", "-m", "specmods:make", "--weights", "w.pt"),
             _error_line(capsys, "serve", "-m", "specmods:make", "--weights", "code.pkl")]
    assert "m.pt is a pickle-based file, and loading it can run arbitrary code; give --model" in lines[0]
    assert "w.pt is a pickle-based file; convert it to .safetensors" in lines[1]
    for line in lines:
        assert "allow" not in line and set(re.findall(r"--[a-z-]+", line)) <= flags, line
    assert not (workdir / "ran").exists()
