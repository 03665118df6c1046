"""Weight statistics, activation statistics and per-class means against direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unveil.errors import OptionError
from unveil.featurevis import activation_stats, class_mean_activations, weight_stats


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Tanh(), nn.BatchNorm1d(5),
    )
    with torch.no_grad():
        net[0].bias[1] = -100.0  # channel 1 of the ReLU never fires: a dead unit
        net[2].weight.mul_(30.0)  # pushes the sigmoid towards saturation
        net[5].weight[:, :10] = 0.0  # some exact zeros
        net[7].running_var.fill_(2.0)
    return net.eval()


def test_weight_stats_match_numpy():
    net = _net()
    rows = {r["layer"]: r for r in weight_stats(net)}
    assert list(rows) == ["0", "2", "5", "7"]
    for name in ("0", "2", "5"):
        w = net.get_submodule(name).weight.detach().double().numpy()
        m = w.reshape(w.shape[0], -1)
        r = rows[name]
        assert r["n_params"] == w.size and r["shape"] == w.shape
        np.testing.assert_allclose(r["norm"], np.linalg.norm(w))
        np.testing.assert_allclose(r["spectral_norm"], np.linalg.norm(m, 2), rtol=1e-10)
        np.testing.assert_allclose(r["stable_rank"], np.linalg.norm(w) ** 2 / np.linalg.norm(m, 2) ** 2)
        np.testing.assert_allclose(r["sparsity"], np.mean(w == 0))
        np.testing.assert_allclose(r["bias_norm"], float(np.linalg.norm(net.get_submodule(name).bias.detach().numpy())), rtol=1e-6)
    assert rows["5"]["sparsity"] == pytest.approx(50 / 240)
    assert rows["0"]["sparsity"] == 0.0
    assert rows["7"]["spectral_norm"] == pytest.approx(rows["7"]["max_abs"])  # a diagonal
    tol = weight_stats(net, sparsity_tol=1e9)
    assert all(r["sparsity"] == 1.0 for r in tol)
    assert weight_stats(net, spectral=False)[0]["spectral_norm"] is None


def _brute(net, x):
    outs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o))
             for n, m in net.named_modules() if n]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return outs


def test_activation_stats_match_direct_computation():
    net = _net()
    x = torch.randn(70, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    st = activation_stats(net, x, batch_size=16)
    assert st.layers == ["0", "1", "2", "3", "5", "6", "7"]  # Flatten is skipped
    outs = _brute(net, x)
    for name in st.layers:
        a = outs[name].double()
        u = a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 1).reshape(a.shape[1], -1)
        np.testing.assert_allclose(st.unit_mean[name], u.mean(1).numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(st.unit_std[name], u.std(1, unbiased=False).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(st.unit_max[name], u.amax(1).numpy(), rtol=1e-6)
        np.testing.assert_array_equal(st.dead[name], (u.amax(1) <= 0).numpy())
    rows = {r["layer"]: r for r in st.table()}
    assert rows["1"]["dead_fraction"] == 0.25  # exactly the one dead channel of four
    np.testing.assert_allclose(rows["1"]["inactive_fraction"], float((outs["1"] <= 0).double().mean()))
    sig = outs["3"]
    sat = float(((sig <= 0.01) | (sig >= 0.99)).double().mean())
    assert sat > 0.1  # the case is not trivial
    np.testing.assert_allclose(rows["3"]["saturation"], sat)
    assert rows["1"]["saturation"] is None  # ReLU is unbounded above
    np.testing.assert_allclose(rows["6"]["saturation"], float((outs["6"].abs() >= 0.98).double().mean()))
    # streaming from an iterable gives the same numbers
    it = activation_stats(net, [x[i:i + 9] for i in range(0, 70, 9)], layers=["1", "3"])
    np.testing.assert_allclose(it.unit_mean["3"], st.unit_mean["3"], rtol=1e-6)
    assert it.n_seen == 70


def test_class_means_match_direct_computation():
    net = _net()
    x = torch.randn(60, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    y = torch.arange(60) % 4
    y[y == 2] = 3  # class 2 is empty
    cm = class_mean_activations(net, x, layer="1", labels=y, n_classes=5, batch_size=7)
    feats = _brute(net, x)["1"].mean((2, 3)).double()
    for c in (0, 1, 3):
        np.testing.assert_allclose(cm.values[c], feats[y == c].mean(0).numpy(), rtol=1e-6, atol=1e-9)
    assert np.isnan(cm.values[2]).all() and np.isnan(cm.values[4]).all()
    np.testing.assert_array_equal(cm.counts, [15, 15, 0, 30, 0])
    assert cm.by == "labels"
    pred = class_mean_activations(net, x, layer="5")
    with torch.no_grad():
        p = net(x).argmax(1)
    assert pred.by == "predicted" and pred.counts.sum() == 60
    np.testing.assert_array_equal(pred.counts[: int(p.max()) + 1], torch.bincount(p).numpy())
    pairs = class_mean_activations(net, [(x[:30], y[:30]), (x[30:], y[30:])], layer="1")
    np.testing.assert_allclose(pairs.values[:4], cm.values[:4], rtol=1e-6)
    table = cm.table()
    assert len(table) == 5 * 4 and set(table[0]) == {"class", "unit", "mean", "count"}


def test_tables_and_plots():
    import matplotlib

    matplotlib.use("Agg")
    net = _net()
    x = torch.randn(20, 2, 6, 6)
    ws = weight_stats(net)
    df = ws.to_pandas()
    assert list(df["layer"]) == ["0", "2", "5", "7"] and "spectral_norm" in df.columns
    assert ws.plot("spectral_norm").get_ylabel() == "spectral_norm"
    with pytest.raises(OptionError, match="no column 'nope'"):
        ws.plot("nope")
    st = activation_stats(net, x)
    assert st.plot().get_ylabel() == "dead_fraction"
    cm = class_mean_activations(net, x, layer="0", labels=torch.arange(20) % 2, class_names=["a", "b"])
    assert "per class" in cm.plot().get_title()


def test_errors():
    net = _net()
    x = torch.randn(4, 2, 6, 6)
    with pytest.raises(OptionError, match="needs a torch.nn.Module"):
        weight_stats(lambda t: t)
    with pytest.raises(OptionError, match="sparsity_tol"):
        weight_stats(net, sparsity_tol=-1.0)
    with pytest.raises(OptionError, match="needs a torch.nn.Module"):
        activation_stats(lambda t: t, x)
    with pytest.raises(OptionError, match="no layers to inspect"):
        activation_stats(net, x, layers=[])
    from unveil.errors import InputError

    with pytest.raises(InputError, match="labels must be 4 integers"):
        class_mean_activations(net, x, layer="0", labels=[0, 1])
    with pytest.raises(InputError, match="labels= goes with a tensor"):
        class_mean_activations(net, [x], layer="0", labels=[0, 1, 0, 1])
