"""``unveil counterfactual`` and ``uv.counterfactuals``: the library's result, printed and written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

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


TEXT_MODULE = '''
import numpy as np
import torch

PLANS = ["basic", "plus", "gold"]


class Preprocess:
    """(income, plan code, branch) -> (income, one-hot plan); branch is not read."""

    categories = {"plan": PLANS}

    def __call__(self, rows):
        rows = np.asarray(rows, dtype=np.float64)
        onehot = (rows[:, 1:2] == np.arange(3)[None, :]).astype(np.float64)
        return np.concatenate([rows[:, :1], onehot], axis=1).astype(np.float32)


preprocess = Preprocess()


def model():
    lin = torch.nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[1] = torch.tensor([1.0, -1.0, 0.0, 1.0])  # approve: income, gold plan
    return lin.eval()
'''


@pytest.fixture
def text_table(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    plans = ["basic", "plus", "gold"]
    lines = ["income,plan,branch,outcome"]
    for _ in range(120):
        inc, plan = rng.normal(), plans[rng.integers(3)]
        lines.append(f"{inc:.4f},{plan},{rng.integers(3)},{'yes' if inc + (plan == 'gold') - (plan == 'basic') > 0 else 'no'}")
    (tmp_path / "plans.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "cfplans_t.py").write_text(TEXT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "plans.csv"


def test_cli_reads_a_table_with_words_as_serve_does(capsys, text_table):
    """--preprocess, --class-names and --label-column as ``unveil serve`` takes them: the words of
    a text column in the sentences, a column the model does not read fixed, classes named."""
    import importlib

    mod = importlib.import_module("cfplans_t")
    net, pre = mod.model(), mod.preprocess
    args = ("counterfactual", "-m", "cfplans_t:model", "-i", str(text_table), "--label-column", "outcome",
            "--class-names", "refused,approved", "--preprocess", "cfplans_t:preprocess", "--rows", "0:12",
            "-k", "2", "--increasing", "income")
    code, stdout, err = _main(capsys, *args, "--json")
    assert code == 0, err
    out = json.loads(stdout)
    names = out["feature_names"]
    assert names == ["income", "plan", "branch"] and out["class_names"] == ["refused", "approved"]
    assert out["value_names"] == {"plan": ["basic", "plus", "gold"]}
    assert "branch" in out["constraints"]["immutable"]  # not read by the model: fixed
    seen_words = False
    for r in out["rows"]:
        x = np.array(r["input"])
        for cf in r["counterfactuals"]:
            z = np.array(cf["values"])
            with torch.no_grad():
                assert int(net(torch.from_numpy(pre(z[None]))).argmax(1)) == r["desired"]
            assert z[2] == x[2] and z[0] >= x[0] and z[1] in (0, 1, 2)
            if "plan" in cf["changes_in_words"]:
                assert set(cf["changes_in_words"]["plan"]) <= {"basic", "plus", "gold"}
                assert "plan been " + cf["changes_in_words"]["plan"][1] in cf["recourse"]
                seen_words = True
        assert ("approved" in r["recourse"]) or ("refused" in r["recourse"])
    assert seen_words, "some counterfactual changes the plan, told in words"
    code, stdout, _ = _main(capsys, *args, "--anchor")
    assert code == 0 and "fixed because the model does not read them: branch" in stdout
    assert "anchor: As long as" in stdout
    code, _, err = _main(capsys, "counterfactual", "-m", "cfplans_t:model", "-i", str(text_table),
                         "--label-column", "outcome")
    assert code != 0 and "--preprocess" in err  # text columns need one, as serve says
