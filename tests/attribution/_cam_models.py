"""Small models for the CAM and LRP tests: a residual CNN and a tiny vision transformer."""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics (eval-mode BN is then non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.4 * torch.rand(m.num_features, generator=g) - 0.2)
                m.running_mean.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=g))
    return model


class ResBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus a (projected) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=bn_eps)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=bn_eps)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout, eps=bn_eps))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.short(x))


class ResCNN(nn.Module):
    """A small residual CNN on 3x16x16 inputs: stem, two residual blocks, GAP, linear."""

    def __init__(self, n_classes: int = 5, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8, eps=bn_eps), nn.ReLU())
        self.layer1 = ResBlock(8, 8, 1, bn_eps)
        self.layer2 = ResBlock(8, 16, 2, bn_eps)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layer2(self.layer1(self.stem(x))))))


def res_cnn(seed: int = 0, bn_eps: float = 1e-5) -> ResCNN:
    torch.manual_seed(seed)
    return randomize_bn(ResCNN(bn_eps=bn_eps), seed).eval()  # type: ignore[return-value]


class GapCNN(nn.Module):
    """conv-relu-conv-relu, then global average pooling and a linear head (the CAM setting)."""

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A vision transformer on 1x16x16 inputs: 4x4 patches (16 tokens) plus a class token."""

    def __init__(self, d: int = 32, patch: int = 4, size: int = 16, n_classes: int = 2,
                 depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, d, patch, patch)
        n = (size // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.blocks = nn.Sequential(*[Block(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def blob_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images with one bright 4x4 patch at a random patch position: solid (class 0) or
    striped (class 1). Returns images, labels, patch indices (row-major over the 4x4 grid)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    pos = torch.randint(0, 16, (n,), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    rows, cols = pos // 4, pos % 4
    r = torch.arange(16)
    inside = ((r[None, :] // 4) == rows[:, None])[:, :, None] & ((r[None, :] // 4) == cols[:, None])[:, None, :]
    stripes = (r % 2 == 0)[None, :, None].expand(n, 16, 16) | (y == 0)[:, None, None]
    return x + (inside & stripes)[:, None].float(), y, pos


def train_tiny_vit(seed: int = 0) -> TinyViT:
    """Train the tiny ViT on the blob task in a few seconds (100 % test accuracy expected)."""
    torch.manual_seed(seed)
    model = TinyViT()
    x, y, _ = blob_images(512, seed)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(60):
        i = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    opt.zero_grad(set_to_none=True)
    return model
