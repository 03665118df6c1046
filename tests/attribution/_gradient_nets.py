"""Small networks shared by the gradient-family tests (no training; seeded random weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.short(x))


class SmallResNet(nn.Module):
    """A residual CNN (stem, two residual stages with BatchNorm, global pool, 5 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = ResBlock(8, 8, 1)
        self.layer2 = ResBlock(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layer2(self.layer1(self.stem(x))))))


def small_resnet(seed: int = 0) -> nn.Module:
    """Random residual CNN with randomised BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = SmallResNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


# --------------------------------------------------------- one network, four ways to write ReLU
class CleanNet(nn.Module):
    """conv-relu-conv-relu-(+skip)-fc-relu-fc with distinct, non-in-place ReLU modules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, 3)
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.r1(self.conv1(x))
        h = self.r2(self.conv2(h) + h)
        return self.fc2(self.r3(self.fc1(h.flatten(1))))


class InplaceNet(CleanNet):
    def __init__(self) -> None:
        super().__init__()
        self.r1, self.r2, self.r3 = nn.ReLU(inplace=True), nn.ReLU(inplace=True), nn.ReLU(inplace=True)


class ReusedNet(CleanNet):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h) + h)
        return self.fc2(self.act(self.fc1(h.flatten(1))))


class FunctionalNet(CleanNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = (self.conv2(h) + h).relu_()
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def relu_variants(seed: int = 0) -> dict[str, nn.Module]:
    """The same weights in the clean, in-place, reused and functional writings."""
    torch.manual_seed(seed)
    clean = CleanNet().eval()
    out: dict[str, nn.Module] = {"clean": clean}
    for name, cls in (("inplace", InplaceNet), ("reused", ReusedNet), ("functional", FunctionalNet)):
        net = cls()
        net.load_state_dict(clean.state_dict())
        out[name] = net.eval()
    return out


# --------------------------------------------------------- tokens
class TokenNet(nn.Module):
    """Embedding -> per-token ReLU layer -> mean over tokens -> 3 logits."""

    def __init__(self, vocab: int = 20, dim: int = 6) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc1 = nn.Linear(dim, 12)
        self.relu = nn.ReLU()
        self.out = nn.Linear(12, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu(self.fc1(self.emb(ids))).mean(1))


def token_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TokenNet().eval()


class MaxPoolWithGap(nn.Module):
    """Wraps a module so a non-module op (``x * 1``) separates it from what follows.

    Captum 0.9's DeepLift computes wrong multipliers when an activation *module* feeds a
    ``MaxPool`` *module* directly (backward-hook interaction; captum issues #1104 and #1276);
    inserting a no-op between them gives a functionally identical network Captum handles.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * 1.0)


def captum_safe_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` in which every MaxPool module first multiplies its input by 1."""
    import copy

    cp = copy.deepcopy(net)
    for m in list(cp.modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
                setattr(m, child_name, MaxPoolWithGap(child))
    return cp
