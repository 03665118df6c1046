"""The call's steps: the first pass (single-pass methods do their work there), the Partial result,
and one method instance used from two threads at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from _cam_models import res_cnn

from _util import assert_unchanged, snapshot
from unveil.attribution import LRP, Attributor, EigenCAM, GradCAM, Partial, Saliency, _cam_pass
from unveil.errors import TargetError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small batches on a shared, loaded machine: one intra-op thread per call."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return res_cnn().eval(), torch.randn(5, 3, 16, 16)


SINGLE_PASS = {
    "grad_cam": lambda m: GradCAM(m, layer="layer2", batch_size=2),
    "eigen_cam": lambda m: EigenCAM(m, layer="layer2", batch_size=2),
    "lrp": lambda m: LRP(m, batch_size=2),
    "saliency": lambda m: Saliency(m, batch_size=2),
}


@pytest.mark.parametrize("target", ["predicted", 3, [0, 1, 2, 3, 4], torch.tensor([4, 3, 2, 1, 0])],
                         ids=["predicted", "int", "list", "tensor"])
@pytest.mark.parametrize("name", list(SINGLE_PASS))
def test_single_pass_methods_evaluate_each_row_once(net, name, target) -> None:
    model, x = net
    e = SINGLE_PASS[name](model)(x, target=target)
    assert e.n_evals == x.shape[0]  # the first pass did the whole work: no extra forward
    expected = model(x).argmax(1) if target == "predicted" else torch.as_tensor(target).expand(5)
    np.testing.assert_array_equal(e.targets, expected.numpy())
    with torch.no_grad():
        assert e.outputs is not None
        np.testing.assert_allclose(e.outputs, model(x)[torch.arange(5), expected].numpy(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["grad_cam", "lrp"])
def test_targets_resolved_after_a_plain_forward_give_the_same_result(net, name, monkeypatch) -> None:
    """When targets cannot be resolved chunk by chunk, the base's forward resolves them first and
    ``_attribute`` runs the single pass itself: one more forward per row, the same values."""
    model, x = net
    method = SINGLE_PASS[name](model)
    fused = method(x, target=[0, 1, 2, 3, 4])
    monkeypatch.setattr(_cam_pass, "_sliceable", lambda target, n: False)
    plain = method(x, target=[0, 1, 2, 3, 4])
    assert plain.n_evals == 2 * x.shape[0]
    np.testing.assert_allclose(plain.values, fused.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(plain.targets, fused.targets)


@pytest.mark.parametrize("name", list(SINGLE_PASS))
def test_malformed_targets_raise_the_usual_error(net, name) -> None:
    model, x = net
    with pytest.raises(TargetError, match="one integer per row"):
        SINGLE_PASS[name](model)(x, target=[[0], [1], [2], [3], [4]])  # type: ignore[list-item]  # malformed on purpose
    with pytest.raises(TargetError, match="out of range"):
        SINGLE_PASS[name](model)(x, target=[0, 1, 2, 3, 99])


@pytest.mark.parametrize("name", ["grad_cam", "lrp", "saliency"])
def test_one_instance_serves_two_threads(net, name) -> None:
    """Concurrent calls on different inputs give what sequential calls give, and the model's
    flags and hooks come back as they were."""
    model, _ = net
    torch.manual_seed(1)
    xs = [torch.randn(4, 3, 16, 16), torch.randn(6, 3, 16, 16)]
    method = SINGLE_PASS[name](model)
    before = snapshot(model)
    sequential = [method(x) for x in xs]
    for _ in range(4):  # several rounds: the threads' passes interleave differently
        for e, ref in zip(_concurrently(method, xs), sequential):
            assert e.values.shape == ref.values.shape
            np.testing.assert_allclose(e.values, ref.values, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(e.targets, ref.targets)
            assert e.outputs is not None and ref.outputs is not None
            np.testing.assert_allclose(e.outputs, ref.outputs, rtol=1e-5, atol=1e-6)
    assert_unchanged(model, before)


def _concurrently(method, xs):
    """``method(x)`` for each ``x``, one thread each, started together."""
    got: list = [None] * len(xs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(xs))

    def work(i: int) -> None:
        start.wait()
        try:
            got[i] = method(xs[i])
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return got


class _Shift(Attributor):
    """Input minus one; reports every Partial field."""

    name = "shift_test"

    def _attribute(self, call, **kwargs):
        part = Partial(values=call.x - 1, delta=torch.zeros(call.x.shape[0]), seed=7,
                       params={"a": 1}, extras={"e": torch.ones(2)}, meta={"m": 1},
                       groups={"kind": "columns"}, modality="tabular")
        return part.add(params={"b": 2}, extras={"f": np.zeros(3)}, meta={"m": 2})


def test_partial_becomes_the_explanation() -> None:
    model = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    e = _Shift(model)(x, target=1)
    np.testing.assert_allclose(e.values, (x - 1).numpy())
    assert isinstance(e.values, np.ndarray) and isinstance(e.extras["e"], np.ndarray)
    assert e.params["a"] == 1 and e.params["b"] == 2 and e.params["batch_size"] == "auto"
    assert e.meta == {"m": 2} and e.seed == 7 and e.groups == {"kind": "columns"}
    assert set(e.extras) == {"e", "f"} and e.delta.shape == (4,) and e.stderr is None
    assert e.modality == "tabular" and e.n_evals == 4


def test_a_dict_result_is_refused() -> None:
    class Old(Attributor):
        name = "old_test"

        def _attribute(self, call, **kwargs):
            return {"values": call.x}

    with pytest.raises(TypeError, match=r"returned dict; it must return an unveil\.attribution\.Partial"):
        Old(torch.nn.Linear(3, 2).eval())(torch.randn(2, 3))
