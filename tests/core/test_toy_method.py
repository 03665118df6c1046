"""A method registered in a test, with one option of its own: every layer above the methods
(``uv.explain``, ``uv.options``, the CLI, ``explain_dataset``, ``Explainer``, reports, the
dashboard) takes it from the declaration, and refuses a misspelt one the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from unveil.attribution import Attributor, Partial
from unveil.core import registry
from unveil.core.options import Option
from unveil.errors import OptionError

NAME = "toy_scale"
MISSPELT = "Did you mean 'scale'"


class ToyScale(Attributor):
    """The input times a constant factor (a method for tests)."""

    def __init__(self, model: object, *, scale: float = 1.0, batch_size: int | str = "auto") -> None:
        super().__init__(model, batch_size=batch_size)
        self.scale = scale

    def _attribute(self, call, **kwargs):
        return Partial(values=call.x * self.scale)


def make_model() -> nn.Module:
    """The CLI's ``--model <this module>:make_model``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.fixture(autouse=True)
def toy() -> Iterator[None]:
    registry.register(NAME, family="test", modalities=("tabular",), options=(
        Option("scale", float, 1.0, "the factor the inputs are multiplied by", low=0.0),))(ToyScale)
    try:
        yield
    finally:
        registry._REGISTRY.pop(NAME, None)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.arange(1.0, 9.0).reshape(2, 4)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    from unveil.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_explain_and_options_read_the_declaration(x) -> None:
    exp = uv.explain(make_model(), x, method=NAME, scale=2.0)
    np.testing.assert_allclose(exp.values, 2 * x.numpy())
    assert exp.params["scale"] == 2.0
    table = uv.options(NAME)
    assert table.names()[-1] == "scale" and {"target", "seed", "batch_size"} <= set(table.names())
    assert "the factor the inputs are multiplied by" in repr(table)
    with pytest.raises(OptionError, match=MISSPELT):
        uv.explain(make_model(), x, method=NAME, scal=2.0)
    with pytest.raises(OptionError, match="option scale='two' should be float"):
        uv.explain(make_model(), x, method=NAME, scale="two")
    with pytest.raises(OptionError, match=r"scale=-1.0 is outside >= 0"):
        uv.make_explainer(make_model(), NAME, scale=-1.0)
    with pytest.raises(OptionError, match=MISSPELT):
        uv.make_explainer(make_model(), NAME, scal=2.0)


def test_cli_explain_reads_the_option_by_its_declared_type(capsys, tmp_path: Path, x) -> None:
    np.save(tmp_path / "x.npy", x.numpy())
    model = f"{__name__}:make_model"
    out = tmp_path / "e.npz"
    code, _, err = _main(capsys, "explain", "-m", model, "-i", str(tmp_path / "x.npy"),
                         "--method", NAME, "-o", "scale=2", "--out", str(out))
    assert code == 0, err
    exp = uv.load(out)
    assert isinstance(exp.params["scale"], float) and exp.params["scale"] == 2.0
    np.testing.assert_allclose(exp.values, 2 * x.numpy())
    code, _, err = _main(capsys, "explain", "-m", model, "-i", str(tmp_path / "x.npy"),
                         "--method", NAME, "-o", "scal=2")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("unveil: error: ") and MISSPELT in err and "Traceback" not in err
    code, _, err = _main(capsys, "explain", "-m", model, "-i", str(tmp_path / "x.npy"),
                         "--method", NAME, "-o", "scale=two")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "should be float" in err


def test_cli_methods_options_prints_the_table(capsys) -> None:
    code, out, _ = _main(capsys, "methods", "--options", NAME)
    assert code == 0 and out.strip() == repr(uv.options(NAME))
    code, out, _ = _main(capsys, "methods")
    assert code == 0 and NAME in out and "multiplied by" not in out  # the listing is unchanged
    code, _, err = _main(capsys, "methods", "--options", "toy_scal")
    assert code == 1 and "Did you mean 'toy_scale'" in err and len(err.strip().splitlines()) == 1


def test_explain_dataset_takes_it_and_refuses_a_typo_before_any_work(tmp_path: Path, x) -> None:
    run = uv.explain_dataset(make_model(), x, method=NAME, out=tmp_path / "run", shard_size=1,
                             progress=False, scale=3.0)
    np.testing.assert_allclose(run.values(), 3 * x.numpy())
    with pytest.raises(OptionError, match=MISSPELT):
        uv.explain_dataset(make_model(), x, method=NAME, out=tmp_path / "typo", progress=False,
                           scal=3.0)
    assert not (tmp_path / "typo").exists()


def test_explainer_takes_it_and_refuses_a_typo(x) -> None:
    ex = uv.Explainer(make_model(), NAME, scale=0.5)
    np.testing.assert_allclose(ex(x).values, 0.5 * x.numpy())
    with pytest.raises(OptionError, match=MISSPELT):
        uv.Explainer(make_model(), NAME, scal=0.5)
    with pytest.raises(OptionError, match="no steps or samples"):
        uv.Explainer(make_model(), NAME, budget_ms=10)


def test_metrics_reexplain_with_the_stored_option_and_refuse_a_typo(x) -> None:
    from unveil.metrics._common import stored_options

    model = make_model()
    exp = uv.explain(model, x, method=NAME, scale=2.0)
    exp.params["_scratch"] = 1  # a stored entry the method does not declare is dropped
    assert stored_options(exp) == {"scale": 2.0, "batch_size": "auto"}
    exp.params["scale"] = "2"  # no longer fits the declared type: the default applies
    assert "scale" not in stored_options(exp)
    res = uv.evaluate(model, uv.explain(model, x, method="saliency"), metrics=["agreement"],
                      agreement={"methods": [NAME], "k": 2, "method_options": {NAME: {"scale": 3.0}}})
    assert res["agreement"].params["methods"] == [NAME]
    with pytest.raises(OptionError, match=MISSPELT):
        uv.evaluate(model, exp, metrics=["max_sensitivity"], explain_options={"scal": 3.0})
    with pytest.raises(OptionError, match=MISSPELT):
        uv.evaluate(model, exp, metrics=["agreement"], agreement={
            "methods": [NAME], "k": 2, "method_options": {NAME: {"scal": 3.0}}})


def test_report_takes_it_per_method_and_as_a_budget(x) -> None:
    rep = uv.report(make_model(), x, [NAME], options={NAME: {"scale": 2.0}}, evaluate=False)
    np.testing.assert_allclose(rep.explanations[NAME].values, 2 * x.numpy())
    rep = uv.report(make_model(), x, [NAME], budget={"scale": 4.0}, evaluate=False)
    np.testing.assert_allclose(rep.explanations[NAME].values, 4 * x.numpy())
    for kw in ({"options": {NAME: {"scal": 2.0}}}, {"budget": {"scal": 2.0}}):
        with pytest.raises(OptionError, match=MISSPELT):  # also with on_error="record"
            uv.report(make_model(), x, [NAME], evaluate=False, on_error="record", **kw)


def test_cli_report_reads_both_forms(capsys, tmp_path: Path, x) -> None:
    np.save(tmp_path / "x.npy", x.numpy())
    base = ("report", "-m", f"{__name__}:make_model", "-i", str(tmp_path / "x.npy"),
            "--method", NAME, "--no-evaluate", "--json", "--out", str(tmp_path / "r.html"))
    for opt in (f"{NAME}.scale=2", "scale=2"):
        code, _, err = _main(capsys, *base, "-o", opt)
        assert code == 0, err
    for opt in (f"{NAME}.scal=2", "scal=2"):
        code, _, err = _main(capsys, *base, "-o", opt)
        assert code == 1 and MISSPELT in err and len(err.strip().splitlines()) == 1, err


def test_cli_report_reads_an_option_for_all_by_each_method_s_type() -> None:
    from unveil.cli import _report_options

    budget, per = _report_options(["layer=3", "seed=1", "grad_cam.layer=features"],
                                  ["grad_cam", "attention_raw", "rise"])
    assert budget == {}
    assert per["attention_raw"] == {"layer": 3}  # an index there (and no seed: it takes none)
    assert per["grad_cam"] == {"layer": "features"}  # the method's own -o wins
    assert per["rise"] == {"seed": 1}
    budget, per = _report_options(["layer=3", "n_steps=8"], [])  # no methods named: a budget
    assert per == {} and budget == {"layer": 3, "n_steps": 8}


def test_dashboard_refuses_an_undeclared_option_with_422(x) -> None:
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from unveil.frontends import LoadedModel
    from unveil.serve import create_app

    app = create_app(models={"toy": LoadedModel(make_model(), name="toy")}, samples={"toy": x},
                     zoo=False)
    with TestClient(app) as c:
        body = {"model": "toy", "sample": 0, "methods": [NAME], "evaluate": False}
        ok = c.post("/api/explain", json={**body, "options": {NAME: {"scale": 2.0}}})
        assert ok.status_code == 200, ok.text
        assert ok.json()["maps"][0]["status"] == "ok"
        bad = c.post("/api/explain", json={**body, "options": {NAME: {"scal": 2.0}}})
        assert bad.status_code == 422 and MISSPELT in bad.json()["detail"]
        stray = c.post("/api/explain", json={**body, "options": {"saliency": {"abs": True}}})
        assert stray.status_code == 422 and "not among the methods" in stray.json()["detail"]


def test_every_registered_method_refuses_an_unknown_cli_option(capsys, tmp_path: Path, x) -> None:
    np.save(tmp_path / "x.npy", x.numpy())
    for info in uv.methods():
        code, _, err = _main(capsys, "explain", "-m", f"{__name__}:make_model", "-i",
                             str(tmp_path / "x.npy"), "--method", info.name, "-o", "no_such_option=1")
        assert code == 1, (info.name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("unveil: error: "), (info.name, err)
        assert f"{info.name!r} takes no option 'no_such_option'" in lines[0]
        assert "Traceback" not in err
