"""Tests of unveil.zoo: accuracy, the data split, and the safetensors cache (reuse, invalidation,
atomic writes under a lock shared by processes)."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from unveil.errors import OptionError
from unveil.zoo import ZOO, ZooData, ZooModel, breast_cancer_mlp, digits_cnn, load_dataset
from unveil.zoo._cache import IDENTITY_KEY, INFO_KEY, resolve_cache_dir
from unveil.zoo._data import split_indices

NAMES = ["digits_cnn", "breast_cancer_mlp", "marked_digits_cnn"]
MIN_ACCURACY = {"digits_cnn": 0.97, "breast_cancer_mlp": 0.95, "marked_digits_cnn": 0.97}


# --------------------------------------------------------------------------- helpers


def _header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _accuracy(model: nn.Module, data: ZooData) -> float:
    with torch.no_grad():
        return float((model(data.X_test).argmax(dim=1) == data.y_test).double().mean())


def _trained_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("training zoo")]


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder in which both zoo models were trained once, through UNVEIL_CACHE."""
    cache = tmp_path_factory.mktemp("zoo-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNVEIL_CACHE", str(cache))
        for entry in ZOO.values():
            entry.factory()
    yield cache


@pytest.fixture
def cache(trained_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNVEIL_CACHE", str(trained_cache))
    return trained_cache


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("UNVEIL_CACHE", str(folder))
    return folder


# --------------------------------------------------------------------------- the models


@pytest.mark.parametrize("name", NAMES)
def test_test_accuracy_and_training_time(cache: Path, name: str) -> None:
    model = ZOO[name].factory()
    data = load_dataset(name)
    accuracy = _accuracy(model, data)
    assert accuracy >= MIN_ACCURACY[name], accuracy
    info = json.loads(_header(cache / f"{name}.safetensors")[INFO_KEY])
    assert info["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    # Training runs on one thread; its CPU time is its wall time on an idle core, whatever else
    # this machine is running at the moment (the wall time is recorded too).
    assert 0 < info["cpu_seconds"] < 30
    assert info["train_seconds"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_model_is_fresh_in_eval_mode_and_leaves_no_grad(cache: Path, name: str) -> None:
    a = ZOO[name].factory()
    b = ZOO[name].factory()
    assert a is not b
    assert not any(m.training for m in a.modules())
    assert all(p.grad is None for p in a.parameters())
    with torch.no_grad():
        next(a.parameters()).add_(1.0)  # the caller owns its copy
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_digits_cnn_architecture(cache: Path) -> None:
    model = digits_cnn()
    assert isinstance(model.get_submodule("features.6"), nn.Conv2d)
    assert isinstance(model.get_submodule("classifier"), nn.Sequential)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3
    assert len({id(m) for m in relus}) == len(relus)
    assert not any(m.inplace for m in relus)
    n_params = sum(p.numel() for p in model.parameters())
    assert 20_000 < n_params < 80_000
    x = load_dataset("digits_cnn").X_test[:5]
    assert model(x).shape == (5, 10)
    assert model.get_submodule("features")(x).shape == (5, 64, 8, 8)


def test_breast_cancer_mlp_architecture(cache: Path) -> None:
    model = breast_cancer_mlp()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(30, 64), (64, 64), (64, 2)]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len({id(m) for m in relus}) == len(relus) == 2
    assert not any(m.inplace for m in relus)
    assert isinstance(model.get_submodule("features.2"), nn.Linear)


def test_zoo_registry() -> None:
    assert list(ZOO) == NAMES
    for name, entry in ZOO.items():
        assert isinstance(entry, ZooModel)
        assert entry.name == name
        assert getattr(entry.factory, "__name__", None) == name
        assert entry.modality == load_dataset(name).modality
        assert entry.description


def test_built_under_inference_mode_is_still_differentiable(cache: Path) -> None:
    with torch.inference_mode():
        model = breast_cancer_mlp()
    x = load_dataset("breast_cancer_mlp").X_test[:3].requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    assert grad.abs().sum() > 0


def test_factory_leaves_global_random_state_and_threads(fresh_cache: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        rng = torch.get_rng_state()
        breast_cancer_mlp()  # trains
        breast_cancer_mlp()  # loads
        assert torch.equal(torch.get_rng_state(), rng)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- the data


@pytest.mark.parametrize("name", NAMES)
def test_split_is_stratified_disjoint_and_complete(name: str) -> None:
    from sklearn.datasets import load_breast_cancer, load_digits

    bunch = load_digits() if name.endswith("digits_cnn") else load_breast_cancer()
    data = load_dataset(name)
    n_train, n_test = len(data.y_train), len(data.y_test)
    assert n_train + n_test == len(bunch.target)
    assert n_test == int(np.ceil(0.25 * len(bunch.target)))
    # disjoint and complete: the source has no duplicate rows and the preprocessing is injective,
    # so every row of train ∪ test must be distinct
    rows = torch.cat([data.X_train, data.X_test]).reshape(n_train + n_test, -1).numpy()
    assert len(np.unique(rows, axis=0)) == len(rows)
    # stratified: each class's share of the test split is 25 % up to rounding
    counts = np.bincount(bunch.target)
    test_counts = np.bincount(data.y_test.numpy(), minlength=len(counts))
    train_counts = np.bincount(data.y_train.numpy(), minlength=len(counts))
    np.testing.assert_array_equal(train_counts + test_counts, counts)
    assert np.all(np.abs(test_counts - 0.25 * counts) <= 1.0), (test_counts, counts)


def test_split_indices_are_a_fixed_partition() -> None:
    y = np.repeat(np.arange(3), [40, 30, 30])
    train, test = split_indices(y)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    np.testing.assert_array_equal(np.bincount(y[test]), [10, 8, 7])
    again = split_indices(y)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], test)


def test_digits_data_are_bilinear_upsampled_pixels_in_unit_range() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load_dataset("digits_cnn")
    assert data.X_train.dtype == data.X_test.dtype == torch.float32
    assert data.y_train.dtype == data.y_test.dtype == torch.int64
    assert data.X_train.shape == (1347, 1, 32, 32)
    assert data.X_test.shape == (450, 1, 32, 32)
    assert float(data.X_train.min()) == 0.0
    assert float(data.X_train.max()) == pytest.approx(1.0)
    assert data.class_names == [str(k) for k in range(10)]
    assert data.feature_names is None
    assert data.modality == "image"
    _, test = split_indices(bunch.target)
    raw = torch.as_tensor(bunch.data[test], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    expected = F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(data.X_test, expected)
    np.testing.assert_array_equal(data.y_test.numpy(), bunch.target[test])


def test_breast_cancer_model_standardises_inside_on_the_training_rows() -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    data = load_dataset("breast_cancer_mlp")
    assert data.X_train.shape == (426, 30) and data.X_test.shape == (143, 30)
    assert data.X_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    model = breast_cancer_mlp()
    with torch.no_grad():
        z = model.standardize(data.X_train)  # the model's first layer: the training rows' scale
        ztest = model.standardize(data.X_test)
    torch.testing.assert_close(z.mean(0), torch.zeros(30), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(30), atol=1e-4, rtol=1e-4)
    assert ztest.mean(0).abs().max() > 1e-3  # test rows were not standardised on their own
    assert data.class_names == ["malignant", "benign"]
    assert data.feature_names == list(bunch.feature_names)
    assert data.modality == "tabular"


def test_load_dataset_returns_fresh_tensors() -> None:
    first = load_dataset("breast_cancer_mlp")
    first.X_train.zero_()
    first.class_names.append("oops")
    second = load_dataset("breast_cancer_mlp")
    assert second.X_train.abs().sum() > 0
    assert second.class_names == ["malignant", "benign"]


def test_load_dataset_rejects_unknown_names() -> None:
    with pytest.raises(OptionError, match=r"unknown zoo data set 'nope'; known names: "):
        load_dataset("nope")


# --------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("name", NAMES)
def test_second_call_loads_from_cache(
    cache: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = cache / f"{name}.safetensors"
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="unveil.zoo"):
        model = ZOO[name].factory()
    assert _trained_messages(caplog) == []
    assert path.stat().st_mtime_ns == mtime
    _assert_state_equal(_state(model), load_file(str(path)))


def test_cached_weights_are_what_is_returned(fresh_cache: Path) -> None:
    """Weights written under the current metadata are loaded as they are, not recomputed."""
    path = fresh_cache / "breast_cancer_mlp.safetensors"
    breast_cancer_mlp()
    header = _header(path)
    zeros = {k: torch.zeros_like(v) for k, v in load_file(str(path)).items()}
    save_file(zeros, str(path), metadata=header)
    model = breast_cancer_mlp()
    assert all(not p.detach().any() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_changed_metadata_triggers_retraining(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    genuine = load_file(str(cache / f"{name}.safetensors"))
    header = _header(cache / f"{name}.safetensors")
    identity = json.loads(header[IDENTITY_KEY])
    assert identity["recipe_version"] and identity["seed"] == 0
    assert identity["torch_version"] == torch.__version__
    stale = dict(identity, recipe_version=identity["recipe_version"] + "-old")
    path = tmp_path / f"{name}.safetensors"
    zeros = {k: torch.zeros_like(v) for k, v in genuine.items()}
    save_file(zeros, str(path), metadata={**header, IDENTITY_KEY: json.dumps(stale)})
    os.utime(path, ns=(0, 0))

    monkeypatch.setenv("UNVEIL_CACHE", str(tmp_path))
    model = ZOO[name].factory()

    assert path.stat().st_mtime_ns != 0
    assert json.loads(_header(path)[IDENTITY_KEY]) == identity
    state = _state(model)
    assert float(sum(v.abs().sum() for v in state.values())) > 0
    _assert_state_equal(state, load_file(str(path)))
    for key in genuine:  # training is seeded: the same weights again
        torch.testing.assert_close(state[key], genuine[key])


def test_other_differences_in_metadata_also_retrain(
    cache: Path, fresh_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = cache / "breast_cancer_mlp.safetensors"
    header = _header(source)
    identity = json.loads(header[IDENTITY_KEY])
    fresh_cache.mkdir()
    path = fresh_cache / "breast_cancer_mlp.safetensors"
    variants: list[dict[str, Any]] = [
        dict(identity, seed=1),
        dict(identity, torch_version="0.0.1"),
        dict(identity, recipe=dict(identity["recipe"], lr=0.5)),
        dict(identity, architecture="SomethingElse"),
    ]
    for variant in variants:
        save_file(load_file(str(source)), str(path), metadata={IDENTITY_KEY: json.dumps(variant)})
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="unveil.zoo"):
            breast_cancer_mlp()
        assert len(_trained_messages(caplog)) == 1, variant
        assert json.loads(_header(path)[IDENTITY_KEY]) == identity


def test_unreadable_cache_file_is_replaced(
    fresh_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_cache.mkdir()
    path = fresh_cache / "breast_cancer_mlp.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with caplog.at_level(logging.INFO, logger="unveil.zoo"):
        model = breast_cancer_mlp()
    assert any("cannot read cached" in r.getMessage() for r in caplog.records)
    _assert_state_equal(_state(model), load_file(str(path)))


def test_tensors_that_do_not_fit_are_retrained(
    cache: Path, fresh_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header = _header(cache / "breast_cancer_mlp.safetensors")
    fresh_cache.mkdir()
    path = fresh_cache / "breast_cancer_mlp.safetensors"
    save_file({"features.0.weight": torch.zeros(3, 3)}, str(path), metadata=header)
    with caplog.at_level(logging.INFO, logger="unveil.zoo"):
        breast_cancer_mlp()
    assert any("does not fit the architecture" in r.getMessage() for r in caplog.records)
    assert len(load_file(str(path))) == len(breast_cancer_mlp().state_dict())  # every tensor


def test_retrain_overwrites(fresh_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    breast_cancer_mlp()
    path = fresh_cache / "breast_cancer_mlp.safetensors"
    os.utime(path, ns=(0, 0))
    with caplog.at_level(logging.INFO, logger="unveil.zoo"):
        breast_cancer_mlp(retrain=True)
    assert len(_trained_messages(caplog)) == 1
    assert path.stat().st_mtime_ns != 0


def test_explicit_cache_dir_wins_over_the_environment(fresh_cache: Path, tmp_path: Path) -> None:
    explicit = tmp_path / "explicit"
    breast_cancer_mlp(cache_dir=explicit)
    assert (explicit / "breast_cancer_mlp.safetensors").is_file()
    assert not fresh_cache.exists()
    assert not list(explicit.glob("*.tmp"))  # the temporary file was moved into place


def test_unusable_cache_folder_still_gives_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("UNVEIL_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.INFO, logger="unveil.zoo"):
        model = breast_cancer_mlp()
    assert any("not caching" in r.getMessage() for r in caplog.records)
    assert _accuracy(model, load_dataset("breast_cancer_mlp")) >= 0.95


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNVEIL_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("UNVEIL_CACHE", "")
    assert resolve_cache_dir() == tmp_path / "xdg" / "unveil"
    monkeypatch.delenv("UNVEIL_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "unveil"


def test_loading_never_unpickles(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for entry in ZOO.values():
        entry.factory()


def test_import_does_not_load_heavy_optional_packages() -> None:
    code = (
        "import sys, unveil.zoo; "
        "print([m for m in ('matplotlib', 'skimage', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- two processes


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _call_in_child(cache: str, barrier: Any, results: Any) -> None:
    try:
        os.environ["UNVEIL_CACHE"] = cache
        from unveil.zoo import breast_cancer_mlp

        handler = _Collect()
        logger = logging.getLogger("unveil.zoo")
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        barrier.wait(timeout=120)
        model = breast_cancer_mlp()
        digest = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.numpy().tobytes())
        trained = any(m.startswith("training zoo model") for m in handler.messages)
        results.put(("ok", digest.hexdigest(), trained))
    except BaseException:
        results.put(("error", traceback.format_exc(), False))


def test_two_processes_at_once_train_once_and_agree(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    cache = str(tmp_path / "shared-cache")
    procs = [
        ctx.Process(target=_call_in_child, args=(cache, barrier, results)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=240) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    errors = [o[1] for o in outcomes if o[0] != "ok"]
    assert not errors, "\n".join(errors)
    assert all(proc.exitcode == 0 for proc in procs)
    assert outcomes[0][1] == outcomes[1][1]
    assert sorted(o[2] for o in outcomes) == [False, True]  # one trained, the other loaded
    path = Path(cache) / "breast_cancer_mlp.safetensors"
    digest = hashlib.sha256()
    for key, value in sorted(load_file(str(path)).items()):
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    assert digest.hexdigest() == outcomes[0][1]
    assert not list(Path(cache).glob("*.tmp"))


def test_breast_cancer_rows_are_in_their_own_units() -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    data = load_dataset("breast_cancer_mlp")
    _, test = split_indices(bunch.target)
    np.testing.assert_allclose(data.X_test.numpy(), bunch.data[test], rtol=1e-6, atol=1e-6)
    # real-unit rows of benign tumours are predicted benign (once, every one came out malignant)
    model = breast_cancer_mlp()
    benign = torch.as_tensor(bunch.data[test][bunch.target[test] == 1], dtype=torch.float32)
    assert (model(benign).argmax(1) == 1).float().mean() > 0.9
