"""The Model adapter: modules, torch functions, scikit-learn estimators and numpy functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from _util import TinyCNN, mlp
from unveil.core.model import Model, as_model
from unveil.errors import (
    InputError,
    LayerNotFoundError,
    ModelError,
    NotDifferentiableError,
    TargetError,
)


def test_module_scores_and_targets() -> None:
    net = mlp().eval()
    m = Model(net)
    x = torch.randn(5, 6)
    out = m.forward(x)
    assert torch.allclose(out, net(x))
    t = m.resolve_targets("predicted", out)
    assert t is not None and torch.equal(t, net(x).argmax(1))
    assert torch.allclose(m.scores(x, t), net(x).max(1).values)
    assert m.n_evals == 10 and m.differentiable  # two forward calls of 5 rows and m.backend == "torch"


def test_probs_output_sums_to_one() -> None:
    m = Model(mlp().eval(), output="probs")
    p = m.forward(torch.randn(4, 6))
    assert torch.allclose(p.sum(1), torch.ones(4))


@pytest.mark.parametrize("wrap", ["tuple", "dict", "logits_attr"])
def test_output_forms(wrap: str) -> None:
    net = mlp().eval()

    class Obj:
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits = logits

    def f(x: torch.Tensor) -> object:
        y = net(x)
        return {"tuple": (y, None), "dict": {"logits": y}, "logits_attr": Obj(y)}[wrap]

    x = torch.randn(3, 6)
    assert torch.allclose(Model(f).forward(x), net(x))


def test_sklearn_estimator_and_numpy_function() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    m = Model(clf)
    out = m.forward(torch.from_numpy(X[:7]))
    assert np.allclose(out.numpy(), clf.predict_proba(X[:7]), atol=1e-6)
    assert m.backend == "numpy" and not m.differentiable
    with pytest.raises(NotDifferentiableError, match="perturbation method"):
        m.require_gradients("saliency")

    w = np.array([1.0, -2.0, 0.5, 0.0])
    fn = Model(lambda a: np.asarray(a) @ w)  # returns an ndarray: the probe picks numpy
    out = fn.forward(torch.from_numpy(X[:3]).double())
    assert fn.backend == "numpy"
    assert np.allclose(out.numpy(), X[:3] @ w)
    assert fn.resolve_targets("predicted", out) is None


def test_numpy_ufunc_function_is_called_with_arrays() -> None:
    """``np.exp`` takes a tensor and returns one through ``__array_wrap__`` (deprecated, with a
    warning on every call): the probe must still see a numpy function."""
    import warnings

    fn = Model(lambda a: 1.0 / (1.0 + np.exp(-a[:, 0])))
    x = torch.randn(5, 3, dtype=torch.float64)
    fn.forward(x)  # the probe, with the warnings as the user's process has them
    assert fn.backend == "numpy" and not fn.differentiable
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        out = fn.forward(x)
    assert np.allclose(out.numpy(), 1.0 / (1.0 + np.exp(-x.numpy()[:, 0])))


def test_torch_function_is_differentiable() -> None:
    w = torch.tensor([1.0, -2.0, 0.5])
    m = Model(lambda x: x @ w)
    x = torch.randn(4, 3)
    m.forward(x)
    s, g = m.gradient(x, None)
    assert m.backend == "torch"
    assert torch.allclose(g, w.expand(4, 3))


def test_target_errors() -> None:
    m = Model(mlp(n_out=3).eval())
    out = m.forward(torch.randn(2, 6))
    with pytest.raises(TargetError, match=r"out of range.*\[0, 2\]"):
        m.resolve_targets(3, out)
    with pytest.raises(TargetError, match="one integer per row"):
        m.resolve_targets([0, 1, 2], out)
    with pytest.raises(TargetError, match="only for models with one output"):
        m.resolve_targets(None, out)
    with pytest.raises(TargetError, match="'predicted'"):
        m.resolve_targets("best", out)
    t = m.resolve_targets(np.array([2, 0]), out)
    assert t is not None and torch.equal(t, torch.tensor([2, 0]))


def test_input_errors() -> None:
    m = Model(TinyCNN().eval())
    with pytest.raises(InputError, match="NaN or infinite"):
        m.prepare(torch.tensor([[[[float("nan")]]]]))
    with pytest.raises(InputError, match=r"leading batch axis.*x\[None\]"):
        m.prepare(torch.zeros(16))
    with pytest.raises(InputError, match=r"rejected inputs of shape \(2, 3, 16, 16\).*expects \(N, 1, H, W\)"):
        m.forward(m.prepare(torch.zeros(2, 3, 16, 16)))
    with pytest.raises(InputError, match="numeric"):
        m.prepare(np.array([["a", "b"]]))


def test_layer_lookup_lists_close_names() -> None:
    m = Model(TinyCNN())
    assert m.layer("features.3") is m.module.features[3]
    with pytest.raises(LayerNotFoundError, match=r"no layer 'features\.7'.*Closest names: .*features\."):
        m.layer("features.7")


def test_bad_model_outputs() -> None:
    with pytest.raises(ModelError, match="one row of scores per input row"):
        Model(lambda x: x.sum()).forward(torch.randn(3, 2))
    with pytest.raises(ModelError, match="must be callable"):
        Model(42)


def test_non_differentiable_torch_model() -> None:
    m = Model(lambda x: torch.round(x.detach()).sum(1))
    x = torch.randn(3, 2)
    m.forward(x)
    with pytest.raises(NotDifferentiableError, match="does not depend differentiably"):
        m.gradient(x, None)


def test_fingerprint_tracks_parameters() -> None:
    net = mlp()
    a = Model(net).fingerprint()
    assert a == Model(net).fingerprint()
    with torch.no_grad():
        net[0].weight[0, 0] += 1
    assert Model(net).fingerprint() != a
    assert as_model(Model(net)) is not None
