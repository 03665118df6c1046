"""Each LRP rule against a matrix-form re-implementation in float64, and conservation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unveil.attribution.lrp import LINEAR_LAYERS, LRP, Composite, rules

EPS = 1e-6


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared machine: one thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stab(d: np.ndarray, eps: float) -> np.ndarray:
    return d + eps * np.where(d >= 0, 1.0, -1.0)


def div(num: np.ndarray, den: np.ndarray, eps: float) -> np.ndarray:
    if eps == 0:
        return np.where(den == 0, 0.0, num / np.where(den == 0, 1.0, den))
    return num / stab(den, eps)


def rule_step(rule: str, a, W, b, R, z, *, Wp=None, Wn=None, W1=None, Wsq=None, low=None,
              high=None, eps=EPS, gamma=0.25, alpha=2.0, beta=1.0):
    """Relevance of the inputs ``a`` (I,) of ``z = W a + b`` given output relevance ``R`` (O,).

    ``Wp``, ``Wn``, ``W1``, ``Wsq`` are the matrices of the layer with its weights replaced by
    their positive part, negative part, ones, squares (for a dense layer ``max(W, 0)`` etc.;
    for a convolution the modified kernel, so a pixel reached twice by reflect padding adds
    the modified weights of both paths)."""
    ap, an = np.maximum(a, 0), np.minimum(a, 0)
    Wp = np.maximum(W, 0) if Wp is None else Wp
    Wn = np.minimum(W, 0) if Wn is None else Wn
    bp, bn = np.maximum(b, 0), np.minimum(b, 0)
    if rule in ("epsilon", "zero"):
        c = W * a[None]
        return (c * div(R, c.sum(1) + b, eps if rule == "epsilon" else 0)[:, None]).sum(0)
    if rule == "z_plus":
        c = Wp * ap[None] + Wn * an[None]
        return (c * div(R, c.sum(1) + bp, eps)[:, None]).sum(0)
    if rule == "alpha_beta":
        cp = Wp * ap[None] + Wn * an[None]
        cn = Wn * ap[None] + Wp * an[None]
        return (alpha * cp * div(R, cp.sum(1) + bp, eps)[:, None]
                - beta * cn * div(R, cn.sum(1) + bn, eps)[:, None]).sum(0)
    if rule == "gamma":
        Wgp, Wgn = W + gamma * Wp, W + gamma * Wn
        cA = Wgp * ap[None] + Wgn * an[None]
        cB = Wgn * ap[None] + Wgp * an[None]
        RA = np.where(z > 0, R, 0.0)
        RB = np.where(z < 0, R, 0.0)
        return (cA * div(RA, cA.sum(1) + b + gamma * bp, eps)[:, None]
                + cB * div(RB, cB.sum(1) + b + gamma * bn, eps)[:, None]).sum(0)
    if rule == "z_box":
        c = W * a[None] - Wp * low[None] - Wn * high[None]
        return (c * div(R, c.sum(1), eps)[:, None]).sum(0)
    if rule == "flat":
        return (W1 * div(R, W1.sum(1), eps)[:, None]).sum(0)
    if rule == "w_square":
        return (Wsq * div(R, Wsq.sum(1), eps)[:, None]).sum(0)
    raise AssertionError(rule)


def dense(layer: nn.Module, in_shape: tuple[int, ...], weight=None) -> np.ndarray:
    """The layer's linear part (no bias) as a matrix (out, in), from the identity basis."""
    n = int(np.prod(in_shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    w = layer.weight if weight is None else weight
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            out = basis @ w.T
        else:
            out = layer._conv_forward(basis, w, None)
    return out.reshape(n, -1).T.numpy()


def bias_vector(layer: nn.Module, out_shape: tuple[int, ...]) -> np.ndarray:
    b = layer.bias.detach().numpy() if layer.bias is not None else np.zeros(out_shape[0])
    return np.broadcast_to(b.reshape(-1, *([1] * (len(out_shape) - 1))), out_shape).ravel()


def make_net(kind: str, bias: bool = True) -> tuple[nn.Sequential, tuple[int, ...]]:
    torch.manual_seed({"conv": 0, "strided": 1, "conv1d": 2, "reflect": 3}[kind])
    if kind == "conv":
        net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.ReLU(), nn.AvgPool2d(2),
                            nn.Flatten(), nn.Linear(27, 16, bias=bias), nn.ReLU(),
                            nn.Linear(16, 4, bias=bias))
        shape: tuple[int, ...] = (2, 6, 6)
    elif kind == "strided":
        net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2, bias=bias),
                            nn.ReLU(), nn.Conv2d(4, 3, 2, bias=bias), nn.ReLU(), nn.Flatten(),
                            nn.Linear(27, 4, bias=bias))
        shape = (2, 7, 7)
    elif kind == "conv1d":
        net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool1d(2),
                            nn.Flatten(), nn.Linear(15, 4, bias=bias))
        shape = (2, 10)
    else:
        net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, padding_mode="reflect", bias=bias),
                            nn.ReLU(), nn.Flatten(), nn.Linear(48, 4, bias=bias))
        shape = (1, 4, 4)
    if bias:
        with torch.no_grad():
            for m in net:
                if getattr(m, "bias", None) is not None:
                    m.bias.uniform_(-0.1, 0.1)
    return net.double().eval(), shape


def reference(net: nn.Sequential, x: torch.Tensor, target: int, rule: str, **kw) -> np.ndarray:
    """Matrix-form LRP for one row: forward layer by layer, then rule steps backwards."""
    acts, steps = [x[None]], []
    for m in net:
        acts.append(m(acts[-1]).detach())
    R = np.zeros(acts[-1].shape[1])
    R[target] = acts[-1][0, target].item()
    first = next(i for i, m in enumerate(net) if isinstance(m, LINEAR_LAYERS))
    for i in reversed(range(len(net))):
        m, a_in, a_out = net[i], acts[i][0], acts[i + 1][0]
        a = a_in.numpy().ravel()
        if isinstance(m, LINEAR_LAYERS):
            in_shape = tuple(a_in.shape)
            W = dense(m, in_shape)
            opts = dict(Wp=dense(m, in_shape, m.weight.clamp(min=0)),
                        Wn=dense(m, in_shape, m.weight.clamp(max=0)),
                        W1=dense(m, in_shape, torch.ones_like(m.weight)),  # type: ignore[arg-type]
                        Wsq=dense(m, in_shape, m.weight ** 2), **kw)
            name = rule
            if rule == "z_box" and i != first:
                name = "epsilon"
            if name == "z_box":
                opts["low"] = np.full_like(a, -2.0)
                opts["high"] = np.full_like(a, 3.0)
            z = W @ a + bias_vector(m, tuple(a_out.shape))
            R = rule_step(name, a, W, bias_vector(m, tuple(a_out.shape)), R, z, **opts)
        elif isinstance(m, nn.AvgPool2d):  # norm rule: epsilon with the pooling matrix
            n = a.size
            P = m(torch.eye(n, dtype=torch.float64).reshape(n, *a_in.shape)).reshape(n, -1).T.numpy()
            R = rule_step("epsilon", a, P, np.zeros(P.shape[0]), R, P @ a)
        elif isinstance(m, nn.MaxPool1d):  # gradient: to the maximum
            xin = a_in[None].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(m(xin), xin, torch.as_tensor(R).reshape(a_out.shape)[None])
            R = g.numpy().ravel()
        steps.append(type(m).__name__)  # ReLU and Flatten pass relevance unchanged
    return R.reshape(tuple(x.shape))


RULES = {
    "epsilon": lambda st: rules.epsilon(0.01 if st is None else st), "zero": lambda st: rules.zero(),
    "z_plus": lambda st: rules.z_plus(st or EPS),
    "alpha_beta": lambda st: rules.alpha_beta(2.0, 1.0, st or EPS),
    "gamma": lambda st: rules.gamma(0.25, st or EPS),
    "flat": lambda st: rules.flat(st or EPS), "w_square": lambda st: rules.w_square(st or EPS),
}


def composite_for(rule: str, stabilizer: float | None = None) -> Composite:
    """``rule`` on every linear layer (z^B: on the first, ε on the others), no canonizers."""
    st = stabilizer or EPS
    if rule in ("z_box", "flat_first", "w_square_first"):
        first = {"z_box": rules.z_box(-2.0, 3.0, st), "flat_first": rules.flat(st),
                 "w_square_first": rules.w_square(st)}[rule]
        return Composite(first_map=[(LINEAR_LAYERS, first)],
                         layer_map=[(LINEAR_LAYERS, rules.epsilon(st))], canonizers=[],
                         stabilizer=st)
    return Composite(layer_map=[(LINEAR_LAYERS, RULES[rule](stabilizer))], canonizers=[],
                     stabilizer=st)


@pytest.mark.parametrize("kind", ["conv", "strided", "conv1d", "reflect"])
@pytest.mark.parametrize("rule", [*RULES, "z_box"])
def test_rule_equals_matrix_form(rule, kind):
    net, shape = make_net(kind)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    target = [0, 2, 3]
    e = LRP(net, composite=composite_for(rule))(x, target=target)
    kw = {"eps": 0.01} if rule == "epsilon" else {"eps": 0.0} if rule == "zero" else {}
    ref = np.stack([reference(net, x[i], target[i], rule, **kw) for i in range(3)])
    assert (np.abs(ref).reshape(3, -1).max(1) > 1e-3).sum() >= 2 and ref.std() > 1e-4
    np.testing.assert_allclose(e.values, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("rule", ["epsilon", "z_plus", "gamma", "z_box", "flat_first",
                                  "w_square_first"])
def test_conservation_without_biases(rule):
    """Without biases these rules redistribute exactly what they receive (up to the stabiliser),
    so the input relevance sums to the target score. (α-β is conservative only where a neuron
    has both positive and negative contributions; flat and w² above the first layer hand
    relevance to inactive neurons, which the average pooling's norm rule then drops.)"""
    net, shape = make_net("conv", bias=False)
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    e = LRP(net, composite=composite_for(rule, stabilizer=1e-12))(x)
    assert e.delta is not None and e.outputs is not None
    assert np.abs(e.outputs).min() > 1e-3 and e.values.std() > 1e-4
    np.testing.assert_allclose(e.values.reshape(4, -1).sum(1), e.outputs, rtol=1e-8)
    np.testing.assert_allclose(e.delta, e.values.reshape(4, -1).sum(1) - e.outputs, atol=1e-12)


def test_biases_and_epsilon_absorb_relevance():
    """With biases the ε-rule is not conservative, and a large ε absorbs more."""
    net, shape = make_net("conv")
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    small = LRP(net, composite="epsilon", epsilon=1e-9)(x)
    large = LRP(net, composite="epsilon", epsilon=10.0)(x)
    assert small.delta is not None
    assert np.abs(small.delta).max() > 1e-3
    assert (np.abs(large.values.reshape(4, -1).sum(1)) < np.abs(small.values.reshape(4, -1).sum(1))).all()
