"""Hook hygiene: every method leaves the model exactly as it found it, also when it raises."""

from __future__ import annotations

import warnings

import pytest
import torch

import unveil as uv
from _util import Raises, TinyCNN, assert_unchanged, snapshot
from unveil.core import hooks


def test_train_mode_is_explained_in_eval_and_restored() -> None:
    net = TinyCNN()
    net.train()
    net.features[1].eval()  # a mixed state must come back exactly
    before = snapshot(net)
    with pytest.warns(UserWarning, match="training mode"):
        uv.explain(net, torch.rand(2, 1, 16, 16), method="saliency")
    assert_unchanged(net, before)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_raising_model_leaves_no_trace(method: str, train: bool) -> None:
    net = TinyCNN()
    net.features.insert(3, Raises())
    net.train(train)
    net.head[1].weight.grad = torch.ones_like(net.head[1].weight)
    net.features[0].weight.requires_grad_(False)
    before = snapshot(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="boom"):
            uv.explain(net, torch.rand(2, 1, 16, 16), method=method)
    assert_unchanged(net, before)


def test_replaced_modules_restored_on_error() -> None:
    net = TinyCNN()
    orig = net.features[1]
    with pytest.raises(ValueError):
        with hooks.replaced_modules(net, {"features.1": torch.nn.Tanh()}):
            assert isinstance(net.features[1], torch.nn.Tanh)
            raise ValueError
    assert net.features[1] is orig


def test_capture_outputs_and_removal() -> None:
    net = TinyCNN().eval()
    before = snapshot(net)
    with hooks.capture_outputs({"f": net.features[3]}) as store:
        net(torch.rand(2, 1, 16, 16))
    assert store["f"][0].shape == (2, 8, 8, 8)
    assert_unchanged(net, before)


def test_overlapping_guards_restore_the_flags_once() -> None:
    """Two threads guard one model and the first one in ends first: it must not restore the
    flags under the other, nor may the other restore the frozen flags it found."""
    import threading

    net = TinyCNN()
    net.train()
    before = snapshot(net)
    entered, released = threading.Event(), threading.Event()

    def other() -> None:
        with hooks.model_guard(net):
            entered.set()
            released.wait(10)

    t = threading.Thread(target=other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the training-mode warning
        t.start()
        assert entered.wait(10)
        with hooks.model_guard(net):
            released.set()
            t.join()  # the other guard has ended; this one still runs
            assert not any(p.requires_grad for p in net.parameters()) and not net.training
    assert_unchanged(net, before)


def test_hooks_see_only_their_own_threads_passes() -> None:
    import threading

    net = TinyCNN().eval()
    seen: list[int] = []
    with hooks.forward_hooks([(net.features, lambda _m, _i, out: seen.append(out.shape[0]))]):
        worker = threading.Thread(target=lambda: net(torch.rand(3, 1, 16, 16)))
        worker.start()
        worker.join()
        net(torch.rand(2, 1, 16, 16))
    assert seen == [2]


def test_copy_module_drops_unveil_hooks_and_keeps_the_users() -> None:
    """Another thread's hooks on the model must not travel into a copy (they would run there
    with the other thread's bookkeeping); the user's own hooks do."""
    from torch import nn

    from unveil.core.hooks import copy_module, forward_hooks

    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    seen: list[str] = []
    net[0].register_forward_hook(lambda m, i, o: seen.append("user"))
    with forward_hooks([(net[0], lambda m, i, o: seen.append("unveil"))]):
        dup = copy_module(net)
    dup(torch.zeros(1, 3))
    assert seen == ["user"]
    assert len(dup[0]._forward_hooks) == 1 and len(net[0]._forward_hooks) == 1
