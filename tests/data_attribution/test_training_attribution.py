"""The result type, the estimator table, the entry point's errors and the model's safety."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _da_problems import logistic_problem
from torch import nn

import unveil as uv
from _util import assert_unchanged, snapshot
from unveil.data_attribution import (
    ESTIMATORS,
    TrainingAttribution,
    per_example_gradients,
    training_influence,
)
from unveil.data_attribution.evaluation import Retrainer
from unveil.errors import (
    InputError,
    NotDifferentiableError,
    OptionError,
    TargetError,
    UnknownMethodError,
)


@pytest.fixture(scope="module")
def fitted():
    model, x, y, xt, yt = logistic_problem()
    r = Retrainer(model, (x, y), xt, yt, params="all", l2=0.05, tol=1e-12)
    return r.fitted_model(), (x, y, xt, yt)


def test_per_example_gradients_equal_autograd_row_by_row() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    x, y = torch.randn(9, 5), torch.randint(0, 3, (9,))
    got = per_example_gradients(model, x, y, batch_size=4)
    for i in range(9):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        want = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(got[i], want)
    model.zero_grad(set_to_none=True)
    last = per_example_gradients(model, x, y, params="last")
    torch.testing.assert_close(last, got[:, -15:])
    reg = per_example_gradients(model, x, torch.randn(9, 3), loss="mse")  # float targets: MSE per row
    assert reg.shape == got.shape


def test_the_table_and_the_facade() -> None:
    model, x, y, xt, yt = logistic_problem()
    res = uv.training_influence(model, (x, y), xt, yt, method="representer", l2=0.05)
    assert isinstance(res, uv.TrainingAttribution) and {"influence", "representer"} <= set(ESTIMATORS)
    assert res.scores.shape == (4, 40)


def test_representer_terms_sum_to_the_logits_at_a_stationary_point(fitted) -> None:
    """Yeh et al.'s decomposition: at the L2-regularised optimum (bias regularised too) the
    logit of the target class is the sum of the representer terms over the training rows."""
    model, (x, y, xt, yt) = fitted
    res = training_influence(model, (x, y), xt, yt, method="representer", l2=0.05)
    with torch.no_grad():
        logits = model(xt)[torch.arange(len(yt)), yt]
    torch.testing.assert_close(res.scores.sum(1), logits, rtol=1e-7, atol=1e-9)


def test_top_save_load_and_dict(fitted, tmp_path) -> None:
    model, (x, y, xt, yt) = fitted
    res = training_influence(model, (x, y), xt, yt, l2=0.05, damping=0.0, train_indices=np.arange(100, 140),
                             class_names=["a", "b", "c"], feature_names=["u", "v", "w"])
    top = res.top(1, k=3)
    s = res.scores[1].numpy()
    assert [p["position"] for p in top["proponents"]] == list(np.argsort(-s)[:3])
    assert top["proponents"][0]["index"] == 100 + top["proponents"][0]["position"]
    assert all(p["score"] < 0 for p in top["opponents"]) and all(p["score"] > 0 for p in top["proponents"])
    res.evaluation["loo_correlation"] = 0.97
    path = res.save(tmp_path / "r")
    back = TrainingAttribution.load(path)
    torch.testing.assert_close(back.scores, res.scores)
    assert back.class_names == ["a", "b", "c"] and back.evaluation == {"loo_correlation": 0.97}
    np.testing.assert_array_equal(back.train_rows, x.numpy())
    d = json.loads(json.dumps(res.to_dict(k=2)))
    assert d["rows"][1]["proponents"][0]["index"] == top["proponents"][0]["index"]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not an unveil training-attribution file"):
        TrainingAttribution.load(tmp_path / "bad.npz")
    with pytest.raises(OptionError, match="test_index"):
        res.top(9)


def test_html_shows_rows_thumbnails_and_the_figures_in_words(fitted) -> None:
    model, (x, y, xt, yt) = fitted
    res = training_influence(model, (x, y), xt, yt, l2=0.05, feature_names=["age", "bmi", "dose"])
    res.evaluation.update({"loo_correlation": 0.91, "loo_rows": 100.0, "mislabel_auc": 0.95})
    html = res._repr_html_()
    assert "age=" in html and "Leave-one-out check: 100 training rows" in html and "ROC AUC 0.95" in html
    assert "http" not in html and "<script" not in html
    imgs = TrainingAttribution(scores=torch.randn(1, 3), test_targets=np.array([0]), train_indices=np.arange(3),
                               train_labels=np.array([0, 1, 0]), method="influence",
                               train_rows=np.random.default_rng(0).random((3, 8, 8)))
    page = imgs.to_html(title="digits")
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") >= 2


def test_bad_inputs_are_refused_clearly() -> None:
    model, x, y, xt, yt = logistic_problem()
    with pytest.raises(InputError, match="40 rows but 39 targets"):
        training_influence(model, (x, y[:-1]), xt, yt)
    bad = x.clone()
    bad[5, 1] = float("nan")
    with pytest.raises(InputError, match=r"NaN.*rows \[5\]"):
        training_influence(model, (bad, y), xt, yt)
    with pytest.raises(TargetError, match="class indices 0..2"):
        training_influence(model, (x, y), xt, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(InputError, match="rows of shape"):
        training_influence(model, (x, y), xt[:, :2], yt)
    with pytest.raises(UnknownMethodError, match="did you mean 'influence'"):
        training_influence(model, (x, y), xt, yt, method="influense")
    with pytest.raises(OptionError, match="no option 'solvr'"):
        training_influence(model, (x, y), xt, yt, solvr="cg")
    with pytest.raises(OptionError, match="solver must be one of"):
        training_influence(model, (x, y), xt, yt, solver="newton")
    with pytest.raises(OptionError, match="max_exact"):
        training_influence(model, (x, y), xt, yt, max_exact=5)
    with pytest.raises(InputError, match=r"pair \(X, y\)"):
        training_influence(model, x, xt, yt)


class _Rounded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.lin(x).argmax(1), 3).to(x.dtype) * 5.0


def test_non_differentiable_models_are_refused() -> None:
    _, x, y, xt, yt = logistic_problem()
    with pytest.raises(NotDifferentiableError, match="zero gradient"):
        training_influence(_Rounded().double().eval(), (x, y), xt, yt)
    with pytest.raises(NotDifferentiableError, match="nn.Module"):
        training_influence(lambda t: t, (x, y), xt, yt)  # type: ignore[arg-type]
    with pytest.raises(NotDifferentiableError, match="no parameters"):
        training_influence(nn.Identity(), (x, y), xt, yt)


def test_model_left_unchanged_even_on_error(fitted) -> None:
    model, (x, y, xt, yt) = fitted
    model.train()
    model.bias.requires_grad_(False)
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        training_influence(model, (x, y), xt, yt, solver="cg", damping=0.01)
    assert_unchanged(model, before)
    with pytest.raises(OptionError):
        training_influence(model, (x, y), xt, yt, solver="cg", max_iter=0)
    assert_unchanged(model, before)
    model.bias.requires_grad_(True)
    model.eval()
