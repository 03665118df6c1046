"""``unveil counterfactual`` and ``uv.counterfactuals``: the library's result, printed and written."""

from __future__ import annotations

import json

import numpy as np
import pytest

import unveil as uv
from test_cli import _main
from unveil.audit.examples import synthetic_credit

MODULE = """
from unveil.audit.examples import credit_scorer

def scorer():
    return credit_scorer()
"""


@pytest.fixture
def credit_csv(tmp_path, monkeypatch):
    X, _, names = synthetic_credit(300, seed=4)
    path = tmp_path / "credit.csv"
    np.savetxt(path, X, delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    (tmp_path / "cfmodels_t.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path, X, names


def test_cli_matches_the_library_and_writes_every_format(capsys, tmp_path, credit_csv):
    path, X, names = credit_csv
    args = ("counterfactual", "-m", "cfmodels_t:scorer", "-i", str(path), "--rows", "0:6",
            "--immutable", "gender", "--increasing", "age", "--range", "debt=-3:3", "-k", "2")
    code, stdout, _ = _main(capsys, *args, "--json", "--out", str(tmp_path / "cf.json"))
    assert code == 0
    printed = json.loads(stdout)
    lib = uv.counterfactuals(uv.audit.examples.credit_scorer(), X[:6], data=X, feature_names=names,
                             n_counterfactuals=2, constraints=dict(immutable=["gender"], increasing=["age"],
                                                                   ranges={"debt": (-3, 3)}))
    assert [r["recourse"] for r in printed["rows"]] == lib.recourse_texts
    assert json.loads((tmp_path / "cf.json").read_text())["metrics"]["violations"] == 0
    code, stdout, _ = _main(capsys, *args, "--anchor", "--out", str(tmp_path / "cf.html"))
    assert code == 0 and "row 0: " in stdout and "anchor: As long as" in stdout
    html = (tmp_path / "cf.html").read_text()
    assert "What would change the decision" in html and "http" not in html
    code, _, _ = _main(capsys, *args, "--out", str(tmp_path / "cf.npz"))
    back = uv.Counterfactuals.load(tmp_path / "cf.npz")
    np.testing.assert_allclose(back.rows, lib.rows, rtol=1e-5, atol=1e-6)  # the CSV is read as float32


def test_cli_bad_constraints_name_the_flag_and_the_column(capsys, credit_csv):
    path, _, _ = credit_csv
    code, _, err = _main(capsys, "counterfactual", "-m", "cfmodels_t:scorer", "-i", str(path), "--rows", "0:2",
                         "--immutable", "gendr")
    assert code != 0 and "did you mean 'gender'" in err
    code, _, err = _main(capsys, "counterfactual", "-m", "cfmodels_t:scorer", "-i", str(path), "--range", "debt=3")
    assert code != 0 and "NAME=LOW:HIGH" in err
