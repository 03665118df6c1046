"""The ``unveil`` command, run as a user runs it: in a subprocess (bad input in-process too)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import unveil as uv
from report._check import check_self_contained
from unveil.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXE = shutil.which("unveil", path=str(Path(sys.executable).parent))
CMD = [EXE] if EXE else [sys.executable, "-m", "unveil.cli"]

MODULE = """
from torch import nn

def make():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
"""


def run(*args: str, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([*CMD, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=280)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


def assert_user_error(res: subprocess.CompletedProcess[str], fragment: str, code: int = 1) -> None:
    assert res.returncode == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unveil: error: "), res.stderr
    assert fragment in lines[0] and "Traceback" not in res.stderr


def _bc_rows(k: int = 3) -> tuple[np.ndarray, list[str]]:
    data = uv.zoo.load_dataset("breast_cancer_mlp")
    assert data.feature_names is not None
    return data.X_test[:k].numpy(), list(data.feature_names)


def test_methods_lists_the_registry(capsys) -> None:
    res = run("methods", "--json")
    names = {m["name"] for m in json.loads(res.stdout)}
    # this process may have registered more (a test importing a family); never fewer
    assert {"saliency", "integrated_gradients"} <= names <= {m.name for m in uv.methods()}
    code, out, _ = _main(capsys, "methods", "--modality", "tabular")
    listed = {line.split()[0] for line in out.splitlines()[1:]}
    assert code == 0 and listed == {m.name for m in uv.methods("tabular")}


def test_explain_csv_matches_the_library(tmp_path: Path) -> None:
    x, names = _bc_rows()
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        w.writerows(x.tolist())
    out = tmp_path / "e.npz"
    res = run("explain", "--model", "zoo:breast_cancer_mlp", "--input", str(path), "--method",
              "integrated_gradients", "-o", "n_steps=16", "--out", str(out), "--json")
    info = json.loads(res.stdout)
    exp = uv.load(out)
    ref = uv.explain(uv.zoo.breast_cancer_mlp(), torch.from_numpy(x), method="integrated_gradients",
                     n_steps=16)
    torch.testing.assert_close(torch.from_numpy(exp.values), torch.from_numpy(ref.values))
    assert np.abs(ref.values).max() > 0.05  # not a trivial map
    assert exp.feature_names == names and exp.params["n_steps"] == 16
    top = info["samples"][0]["top"][0]
    j = int(np.argmax(np.abs(ref.values[0])))
    assert top["feature"] == names[j] and top["attribution"] == pytest.approx(float(ref.values[0, j]), rel=1e-4)


def test_explain_image_file_and_html(tmp_path: Path) -> None:
    from PIL import Image

    data = uv.zoo.load_dataset("digits_cnn")
    img = (data.X_test[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "digit.png")
    res = run("explain", "-m", "zoo:digits_cnn", "-i", str(tmp_path / "digit.png"), "--method",
              "saliency", "--out", str(tmp_path / "e.html"), "--json")
    info = json.loads(res.stdout)
    x = torch.from_numpy(img.astype(np.float32) / 255)[None, None]
    pred = int(uv.zoo.digits_cnn()(x).argmax())
    assert info["samples"][0]["target"] == pred == int(data.y_test[0])
    check_self_contained((tmp_path / "e.html").read_text(encoding="utf-8"), min_images=2)


def test_import_path_model_with_safetensors_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    (tmp_path / "mymodels.py").write_text(MODULE)
    spec = importlib.util.spec_from_file_location("mymodels_ref", tmp_path / "mymodels.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(3)
    net = mod.make().eval()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run("explain", "-m", "mymodels:make", "--weights", "w.safetensors", "-i", "x.npy",
        "--method", "saliency", "--target", "2", "--out", "e.npz", cwd=tmp_path)
    exp = uv.load(tmp_path / "e.npz")
    ref = uv.explain(net, torch.from_numpy(x), method="saliency", target=2)
    torch.testing.assert_close(torch.from_numpy(exp.values), torch.from_numpy(ref.values))


def test_wrong_weights_for_the_architecture(capsys, tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import save_file

    (tmp_path / "mymodels2.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    save_file({"0.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    code, _, err = _main(capsys, "explain", "-m", "mymodels2:make", "--weights",
                         str(tmp_path / "bad.safetensors"), "-i", "zoo:breast_cancer_mlp")
    assert code == 1 and "do not fit the model: missing ['0.bias', '2.bias'" in err


def test_pickled_model_needs_allow_pickle(capsys, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    torch.save(net, tmp_path / "m.pt")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    res = run("explain", "-m", "m.pt", "-i", "x.npy", cwd=tmp_path, ok=False)
    assert_user_error(res, "pass --allow-pickle if you trust it")
    out = tmp_path / "e.npz"
    code, _, err = _main(capsys, "explain", "-m", str(tmp_path / "m.pt"), "--allow-pickle", "-i",
                         str(tmp_path / "x.npy"), "--method", "saliency", "--out", str(out))
    assert code == 0, err
    ref = uv.explain(net, torch.ones(2, 4), method="saliency")
    assert np.array_equal(uv.load(out).values, ref.values)


def test_report_command(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = run("report", "-m", "zoo:digits_cnn", "-i", "zoo:digits_cnn", "--rows", "0:2",
              "--method", "saliency", "--method", "integrated_gradients",
              "-o", "integrated_gradients.n_steps=8", "--out", str(out), "--no-evaluate", "--json")
    info = json.loads(res.stdout)
    assert [m["status"] for m in info["methods"]] == ["ok", "ok"]
    page = out.read_text(encoding="utf-8")
    check_self_contained(page, min_images=6)
    assert "&quot;n_steps&quot;: 8" in page and "true: " in page


def test_bad_input_in_a_subprocess() -> None:
    res = run("explain", "-m", "zoo:nope", "-i", "zoo:digits_cnn", ok=False)
    assert_user_error(res, "no zoo model named 'nope'")


def test_missing_file_and_bad_out(capsys, tmp_path: Path) -> None:
    code, _, err = _main(capsys, "explain", "-m", "zoo:digits_cnn", "-i", str(tmp_path / "no.png"))
    assert code == 1 and err == f"unveil: error: no such input file: {tmp_path / 'no.png'}\n"
    code, _, err = _main(capsys, "explain", "-m", "zoo:digits_cnn", "-i", "zoo:digits_cnn",
                         "--out", "e.txt")
    assert code == 2 and "must end in .npz or .html" in err and len(err.splitlines()) == 1
    code, _, err = _main(capsys, "explain", "-m", "zoo:digits_cnn")
    assert code == 1 and "no inputs given" in err


def _main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.mark.parametrize("args,fragment", [
    (("--rows", "0:2", "--method", "integrated_gradient"), "Did you mean 'integrated_gradients'"),
    (("--rows", "0:1", "--target", "7"), "target 7 is out of range"),
    (("--rows", "0:1", "--target", "maybe"), "class names: malignant, benign"),
    (("--rows", "5000:"), "selects no rows or rows out of range"),
    (("--rows", "0:1", "-o", "n_steps"), "--option must look like name=value"),
    (("--rows", "0:1", "-o", "n_steps=0"), "option n_steps=0 is outside >= 1"),
    (("--rows", "0:1", "-o", "n_step=8"), "Did you mean 'n_steps'"),
    (("--rows", "0:1", "-o", "n_steps=many"), "option n_steps='many' should be int"),
    (("--rows", "0:1", "-o", "target=1"), "the target is given with --target"),
])
def test_bad_options_print_one_line(capsys, args: tuple[str, ...], fragment: str) -> None:
    code, _, err = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i",
                         "zoo:breast_cancer_mlp", *args)
    assert code == 1 and err.startswith("unveil: error: ") and fragment in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name,content,fragment", [
    ("bad.csv", "a,b\n1,2\n3,x\n", "row 2, column 2 is not a number: 'x'"),
    ("ragged.csv", "1,2,3\n4,5\n", "row 2 has 2 columns, expected 3"),
    ("short.csv", "1,2,3\n", "the model rejected inputs of shape (1, 3)"),
    ("notes.doc", "hello", "unsupported input type '.doc'"),
    ("x.txt", "some words", "text inputs need a tokenizer"),
])
def test_bad_input_files(capsys, tmp_path: Path, name: str, content: str, fragment: str) -> None:
    (tmp_path / name).write_text(content)
    code, _, err = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i", str(tmp_path / name))
    assert code == 1 and fragment in err, err


def test_object_npy_is_never_unpickled(capsys, tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = _main(capsys, "explain", "-m", "zoo:breast_cancer_mlp", "-i", str(tmp_path / "obj.npy"))
    assert code == 1 and "pickled object arrays are never loaded" in err


def test_safetensors_as_model_and_weights_on_estimator(capsys, tmp_path: Path) -> None:
    code, _, err = _main(capsys, "explain", "-m", "w.safetensors", "-i", "zoo:digits_cnn")
    assert code == 1 and "holds weights only" in err
    code, _, err = _main(capsys, "explain", "-m", "sklearn.linear_model:LogisticRegression",
                         "--weights", "w.safetensors", "-i", "zoo:digits_cnn")
    assert code == 1 and "--weights needs a torch.nn.Module" in err


def test_demo_runs_every_method(tmp_path: Path) -> None:
    # every registered method on one input per model; the trust card is tested in-process
    res = run("demo", "--out-dir", str(tmp_path / "demo"), "--samples", "1", "--no-evaluate",
              cwd=tmp_path)
    report = tmp_path / "demo" / "report.html"
    assert f"report: {report.resolve()}" in res.stdout
    page = report.read_text(encoding="utf-8")
    check_self_contained(page, min_images=2)
    table = res.stdout.split("report:")[0]
    for zoo in ("zoo:digits_cnn", "zoo:breast_cancer_mlp"):
        for m in uv.methods():
            assert any(line.split()[:2] == [zoo, m.name] for line in table.splitlines()), (zoo, m.name)
    lines = [ln for ln in table.splitlines() if ln.startswith("zoo:")]
    assert all(ln.split()[2] in ("ok", "skipped") for ln in lines)
    ok = [ln.split() for ln in lines if ln.split()[2] == "ok"]
    assert ok and all(int(parts[4]) > 0 for parts in ok)  # every run counted model evaluations
    # and the bias audit of a network trained on statsmodels' fair data
    audit = tmp_path / "demo" / "audit.html"
    assert f"audit: {audit.resolve()}" in res.stdout and "bias audit of 'religious'" in res.stdout
    check_self_contained(audit.read_text(encoding="utf-8"))


def test_evaluate_command(capsys, tmp_path: Path) -> None:
    metrics = pytest.importorskip("unveil.metrics")
    x = uv.zoo.load_dataset("breast_cancer_mlp").X_test[:4]
    exp = uv.explain(uv.zoo.breast_cancer_mlp(), x, method="saliency")
    exp.save(tmp_path / "s.npz")
    code, out, err = _main(capsys, "evaluate", "-m", "zoo:breast_cancer_mlp", "-e",
                           str(tmp_path / "s.npz"), "--metric", "deletion", "--metric",
                           "sparseness", "--json", "--out", str(tmp_path / "q.npz"))
    assert code == 0, err
    figs = json.loads(out)["figures"]
    ref = metrics.evaluate(uv.zoo.breast_cancer_mlp(), exp, metrics=["deletion", "sparseness"])
    assert figs == {k: pytest.approx(v.value) for k, v in ref.items()}
    assert uv.load(tmp_path / "q.npz").quality["deletion"]["value"] == pytest.approx(ref["deletion"].value)
    code, _, err = _main(capsys, "evaluate", "-m", "zoo:breast_cancer_mlp", "-e",
                         str(tmp_path / "s.npz"), "--metric", "delet")
    assert code == 1 and "unknown metric 'delet'. Did you mean 'deletion'" in err


TEXT_MODULE = '''
import torch
from torch import nn

VOCAB = ["[PAD]", "good", "bad", "movie", "the", "[UNK]"]


class Tok:
    def __call__(self, texts, return_tensors="pt", padding=True, truncation=True):
        rows = [[VOCAB.index(w) if w in VOCAB else 5 for w in t.lower().split()] for t in texts]
        n = max(map(len, rows))
        return {"input_ids": torch.tensor([r + [0] * (n - len(r)) for r in rows])}

    def convert_ids_to_tokens(self, ids):
        return [VOCAB[i] for i in ids]


class Sentiment(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(len(VOCAB), 4)
        self.head = nn.Linear(4, 2)
        self.tokenizer = Tok()
        self.eval()

    def forward(self, ids):
        return self.head(self.emb(ids).mean(1))
'''


def test_text_inputs_use_the_model_tokenizer(capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "textmodels_t.py").write_text(TEXT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "in.txt").write_text("the good movie\n\nbad movie\n")
    out = tmp_path / "t.html"
    code, _, err = _main(capsys, "explain", "-m", "textmodels_t:Sentiment", "-i", str(tmp_path / "in.txt"),
                         "--method", "input_x_gradient", "-o", "layer=emb", "--out", str(out))
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    check_self_contained(page)
    assert page.count('class="uv-tok"') == 5  # 3 words + 2 words: the padding is not shown
    assert ">good</span>" in page and ">[PAD]</span>" not in page
