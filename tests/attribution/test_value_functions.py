"""The value function builds the same perturbed inputs whichever way the groups are stored."""

from __future__ import annotations

import torch

from _util import TinyCNN
from unveil.attribution.shapley import ExactShapley, KernelShap
from unveil.core.groups import FeatureGroups


def _groups(per_channel_labels: torch.Tensor) -> tuple[FeatureGroups, FeatureGroups]:
    """Channel-shared labels (masked per pixel, broadcast over channels) and the same groups as
    explicit (G, C, H, W) masks (the general path)."""
    g = int(per_channel_labels.max()) + 1
    labels = FeatureGroups(g, [str(i) for i in range(g)], "custom", labels=per_channel_labels)
    masks = FeatureGroups(g, [str(i) for i in range(g)], "custom",
                          mask_tensor=torch.stack([per_channel_labels[0] == i for i in range(g)]))
    return labels, masks


def test_channel_shared_labels_equal_explicit_masks() -> None:
    torch.manual_seed(0)
    net = TinyCNN(in_ch=3).eval()
    x = torch.rand(2, 3, 16, 16)
    spatial = (torch.arange(16).view(1, -1) // 6) * 3 + (torch.arange(16).view(-1, 1) // 6)  # 9 blocks
    shared, masks = _groups(spatial.expand(1, 3, 16, 16).clone())
    for base in ("zeros", "blur"):
        a = ExactShapley(net)(x, target=1, groups=shared, baseline=base).values
        b = ExactShapley(net)(x, target=1, groups=masks, baseline=base).values
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=1e-6)
    bg = torch.rand(5, 3, 16, 16)
    a = KernelShap(net, n_samples=64)(x, target=0, groups=shared, background=bg, seed=1).values
    b = KernelShap(net, n_samples=64)(x, target=0, groups=masks, background=bg, seed=1).values
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=1e-6)


def test_labels_that_differ_across_channels_are_not_merged() -> None:
    """One group per colour channel: removing the red channel must not remove green and blue."""
    net = TinyCNN(in_ch=3).eval()
    x = torch.rand(1, 3, 8, 8)
    per_channel = torch.arange(3).view(1, 3, 1, 1).expand(1, 3, 8, 8).clone()
    grp = FeatureGroups(3, ["r", "g", "b"], "custom", labels=per_channel)
    exp = ExactShapley(net)(x, target=0, groups=grp, baseline="zeros")
    with torch.no_grad():
        full = net(x)[0, 0].item()
        empty = net(torch.zeros_like(x))[0, 0].item()
        only_r = net(x * (per_channel == 0))[0, 0].item()
    v = torch.as_tensor(exp.values)[0]
    phi = [float(v[c, 0, 0]) for c in range(3)]  # every element of a group carries its value
    assert abs(sum(phi) - (full - empty)) < 1e-5  # efficiency
    # with only red kept the game differs from the empty one, so red gets its own share
    assert abs(only_r - empty) > 1e-6 and len({round(p, 6) for p in phi}) == 3
