"""A user's own model and data, written by the tests into a folder: a small torch MLP trained on
a credit table with a text column (``region``), handled by a preprocess object, and a column the
model does not take (``group``, a candidate sensitive attribute)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REGIONS = ["north", "south", "east", "west"]
COLUMNS = ["income", "debt", "region", "group", "approved"]

MODULE = '''
"""The user's model: an MLP on (income, debt, one-hot region); group is not an input."""
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class Preprocess:
    """Table rows (income, debt, region code, group code) -> the MLP's six inputs."""

    categories = {"region": ["north", "south", "east", "west"]}
    feature_names = ["income", "debt", "region=north", "region=south", "region=east", "region=west"]

    def __call__(self, rows):
        rows = np.asarray(rows, dtype=np.float64)
        onehot = (rows[:, 2:3] == np.arange(4)[None, :]).astype(np.float64)
        return np.concatenate([rows[:, :2], onehot], axis=1).astype(np.float32)


preprocess = Preprocess()


def _rows():
    import csv

    with open(HERE / "credit.csv", newline="") as fh:
        r = list(csv.DictReader(fh))
    regions = Preprocess.categories["region"]
    X = np.array([[float(d["income"]), float(d["debt"]), regions.index(d["region"]), 0.0] for d in r])
    y = np.array([d["approved"] == "approved" for d in r], dtype=np.int64)
    return X, y


def credit_mlp():
    X, y = _rows()
    x = torch.from_numpy(preprocess(X))
    t = torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), t).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def other_mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()


def plain_linear():
    torch.manual_seed(2)
    return nn.Linear(6, 2).eval()
'''


def credit_rows(n: int = 240, seed: int = 0) -> list[list[str]]:
    """Rows of the credit table: approval follows income minus debt (and a little the north
    region); ``group`` is independent of everything."""
    rng = np.random.default_rng(seed)
    income, debt = rng.normal(size=(2, n))
    region = rng.integers(0, 4, n)
    group = rng.choice(["a", "b"], n)
    score = income - debt + 0.3 * (region == 0) + 0.3 * rng.normal(size=n)
    return [[f"{income[i]:.4f}", f"{debt[i]:.4f}", REGIONS[region[i]], str(group[i]),
             "approved" if score[i] > 0 else "rejected"] for i in range(n)]


def write_user_files(folder: Path, n: int = 240) -> tuple[Path, Path]:
    """``usermodel.py`` and ``credit.csv`` in ``folder``; returns their paths."""
    mod = folder / "usermodel.py"
    mod.write_text(MODULE, encoding="utf-8")
    csv_path = folder / "credit.csv"
    lines = [",".join(COLUMNS)] + [",".join(r) for r in credit_rows(n)]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mod, csv_path
