"""unveil.frontends: the loaders' messages name the caller's settings, not always the CLI's flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unveil.cli import FLAGS
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
