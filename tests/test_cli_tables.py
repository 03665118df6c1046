"""``unveil distill`` and ``unveil audit``: the same figures as the library, files and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import unveil as uv
from test_cli import _main
from unveil.audit.examples import credit_scorer, synthetic_credit

FAIR_MODULE = """
from unveil.audit.examples import credit_scorer

def fair():
    return credit_scorer(gender_weight=0.0, zip_weight=0.0)
"""


@pytest.fixture(scope="module")
def credit_csv(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    X, y, names = synthetic_credit(600, seed=3)
    path = tmp_path_factory.mktemp("credit") / "credit.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=",".join([*names, "repaid"]),
               comments="", fmt="%.17g")
    return path, X, y, names


def test_distill_prints_the_library_figures_and_writes_json(capsys, tmp_path):
    out = tmp_path / "sur.json"
    code, stdout, _ = _main(capsys, "distill", "-m", "zoo:breast_cancer_mlp", "--kind", "rules",
                            "--max-depth", "3", "--curve", "--json", "--out", str(out))
    assert code == 0
    printed = json.loads(stdout)
    data = uv.zoo.load_dataset("breast_cancer_mlp")
    X = torch.cat([data.X_train, data.X_test])  # the zoo's rows are in their own units
    y = torch.cat([data.y_train, data.y_test])
    sur = uv.distill(uv.zoo.breast_cancer_mlp(), X, kind="rules", max_depth=3, y=y,
                     feature_names=data.feature_names, class_names=["malignant", "benign"])
    assert printed["held_out"] == pytest.approx(sur.held_out)
    assert [r["text"] for r in printed["rules"]] == [r["text"] for r in sur.rules().to_dict()]
    assert json.loads(out.read_text())["held_out"] == printed["held_out"]
    assert len(printed["curve"]["fidelity"]) == 8 and max(printed["curve"]["fidelity"]) >= sur.fidelity() - 1e-12
    code, stdout, _ = _main(capsys, "distill", "-m", "zoo:breast_cancer_mlp", "--max-depth", "2")
    assert code == 0 and stdout.startswith("tree surrogate") and "THEN" in stdout


def test_audit_flags_the_biased_scorer_and_counts_groups_directly(capsys, credit_csv, tmp_path,
                                                                   monkeypatch):
    path, X, _, names = credit_csv
    out = tmp_path / "audit.json"
    args = ("audit", "-i", str(path), "--label-column", "repaid", "--sensitive", "gender",
            "--attribution", "permutation")
    code, stdout, _ = _main(capsys, *args, "-m", "unveil.audit.examples:credit_scorer", "--json",
                            "--out", str(out), "--fail-on", "fail")
    assert code == 3
    res = json.loads(stdout)
    assert res["verdict"] == "fail" and set(res["flagged_features"]) == {"gender", "zip_area"}
    with torch.no_grad():
        approve = credit_scorer()(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy() == 1
    for g in (0, 1):
        assert res["group_metrics"][str(g)]["selection_rate"] == pytest.approx(approve[X[:, 4] == g].mean())
    assert json.loads(out.read_text())["verdict"] == "fail"

    (tmp_path / "fairmodels_t.py").write_text(FAIR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, stdout, _ = _main(capsys, *args, "-m", "fairmodels_t:fair", "--fail-on", "review")
    assert code == 0 and "PASS" in stdout.splitlines()[0]


@pytest.mark.parametrize("extra,fragment", [
    (("--label-column", "outcome"), "no label column 'outcome'"),
    (("--sensitive", "sex"), "no feature named 'sex'"),
    (("--positive", "approved"), "neither an output index nor a class name"),
])
def test_audit_bad_options_end_in_one_line(capsys, credit_csv, extra, fragment):
    path = str(credit_csv[0])
    base = {"--label-column": "repaid", "--sensitive": "gender"}
    for k, v in zip(extra[::2], extra[1::2]):
        base[k] = v
    flat = [s for kv in base.items() for s in kv]
    code, _, err = _main(capsys, "audit", "-m", "unveil.audit.examples:credit_scorer", "-i", path, *flat)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and fragment in lines[0], err
