"""Agreement with a reference library: Captum's NaiveInfluenceFunction (explicit Hessian)."""

from __future__ import annotations

import pytest
import torch
from _da_problems import logistic_problem
from torch import nn

from unveil.data_attribution import training_influence
from unveil.data_attribution.evaluation import Retrainer

L2 = 0.05


def test_exact_influence_equals_captums_naive_influence_function(tmp_path) -> None:
    """Captum takes the Hessian of the *summed* loss plus ``hessian_reg`` on its diagonal, so
    with ``hessian_reg = n * l2`` its scores are unveil's divided by n: same sign convention
    (positive = proponent), same ranking, to 1e-6."""
    pytest.importorskip("captum")
    from captum.influence._core.influence_function import NaiveInfluenceFunction
    from torch.utils.data import TensorDataset

    model, x, y, xt, yt = logistic_problem(n=40, d=3, classes=3)
    fitted = Retrainer(model, (x, y), xt, yt, params="all", l2=L2, tol=1e-12).fitted_model()
    ours = training_influence(fitted, (x, y), xt, yt, l2=L2, damping=0.0).scores
    path = tmp_path / "model.pt"
    torch.save(fitted.state_dict(), path)
    n = x.shape[0]
    ref = NaiveInfluenceFunction(fitted, TensorDataset(x, y), str(path), loss_fn=nn.CrossEntropyLoss(reduction="none"),
                                 batch_size=n, projection_dim=fitted.weight.numel() + fitted.bias.numel(),
                                 hessian_reg=n * L2, hessian_inverse_tol=-1e9)
    theirs = ref.influence((xt, yt)).detach().double()
    torch.testing.assert_close(ours / n, theirs, rtol=1e-6, atol=1e-9 * float(theirs.abs().max()))
