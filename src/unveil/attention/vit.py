"""Vision transformers: token relevance mapped back onto image patches, and a tiny ViT.

:func:`tokens_to_image` turns one value per token into a patch grid and a pixel map.
:class:`TinyViT` with :func:`make_patch_task` and :func:`train_tiny_vit` gives a vision
transformer with a known answer, trained in-process in seconds: each image is noise, most with
one small bar pasted into one patch; the class is the bar's orientation (or "no bar"), so the
patch holding the bar is the evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError

__all__ = ["PatchTask", "TinyViT", "make_patch_task", "tokens_to_image", "train_tiny_vit"]


def tokens_to_image(
    tokens: torch.Tensor, image_size: tuple[int, int], prefix_tokens: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map per-token values (N, T) of a vision transformer onto its patch grid and pixels.

    Parameters
    ----------
    tokens : Tensor
        (N, T) values; the first ``prefix_tokens`` (``[CLS]``, distillation tokens) are dropped.
    image_size : (H, W)
        Input resolution; the grid keeps the image's aspect ratio.
    prefix_tokens : int
        Number of non-patch tokens before the patches.

    Returns
    -------
    patch_map : Tensor
        (N, gh, gw) one value per patch, row-major as the patches are flattened.
    pixels : Tensor
        (N, 1, H, W): each pixel carries its patch's value (0 outside a grid that does not
        cover the image).
    """
    h, w = image_size
    n_patch = tokens.shape[1] - prefix_tokens
    gh = max(1, round(math.sqrt(n_patch * h / w))) if n_patch > 0 else 0
    if n_patch <= 0 or n_patch % gh or h < gh or w < n_patch // gh:
        raise InputError(
            f"{tokens.shape[1]} tokens with prefix_tokens={prefix_tokens} do not form a patch "
            f"grid for {h}x{w} images; set prefix_tokens to the number of tokens before the "
            "patches"
        )
    gw = n_patch // gh
    patch_map = tokens[:, prefix_tokens:].reshape(-1, gh, gw)
    ph, pw = h // gh, w // gw
    pix = patch_map.repeat_interleave(ph, 1).repeat_interleave(pw, 2)
    out = pix.new_zeros(tokens.shape[0], 1, h, w)
    out[:, 0, : gh * ph, : gw * pw] = pix
    return patch_map, out


class TinyViT(nn.Module):
    """A small vision transformer: conv patch embedding, ``[CLS]``, pre-norm encoder, head.

    Parameters
    ----------
    image_size, patch, channels : int
        Square inputs of ``channels x image_size x image_size`` cut into ``patch``-sized patches.
    dim, depth, heads : int
        Width, number of encoder layers and attention heads (``nn.MultiheadAttention``).
    n_classes : int
        Output logits.
    """

    def __init__(self, image_size: int = 16, patch: int = 4, channels: int = 1, dim: int = 64,
                 depth: int = 2, heads: int = 4, n_classes: int = 3) -> None:
        super().__init__()
        n = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_embed(x).flatten(2).transpose(1, 2)
        z = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), p], dim=1) + self.pos
        return self.head(self.norm(self.encoder(z)[:, 0]))  # type: ignore[no-any-return]


@dataclass
class PatchTask:
    """Images ``X`` (N, 1, S, S), labels ``y``, and the decisive patch ``where`` (-1: none)."""

    X: torch.Tensor
    y: torch.Tensor
    where: torch.Tensor
    patch: int


def make_patch_task(n: int, *, image_size: int = 16, patch: int = 4, noise: float = 0.3,
                    seed: int = 0) -> PatchTask:
    """Noise images, most with a bar in one random patch; the bar's orientation is the class.

    Class 0 has a horizontal bar, class 1 a vertical one (the same brightness), class 2 none
    (``where`` is -1). Telling 0 or 1 from 2 needs the bar, and the only evidence for either is
    in the patch holding it. (With two classes a model could detect one orientation and default
    to the other, and the second bar would decide nothing.)
    """
    g = torch.Generator().manual_seed(seed)
    grid = image_size // patch
    x = noise * torch.randn(n, 1, image_size, image_size, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    where = torch.randint(0, grid * grid, (n,), generator=g)
    bar = torch.zeros(3, patch, patch)
    bar[0, patch // 2 - 1 : patch // 2 + 1, :] = 1.5
    bar[1, :, patch // 2 - 1 : patch // 2 + 1] = 1.5
    rows, cols = (where // grid) * patch, (where % grid) * patch
    ii = torch.arange(patch)
    r_idx = (rows[:, None, None] + ii[None, :, None]).expand(n, patch, patch)
    c_idx = (cols[:, None, None] + ii[None, None, :]).expand(n, patch, patch)
    x[torch.arange(n)[:, None, None], 0, r_idx, c_idx] += bar[y]
    where[y == 2] = -1
    return PatchTask(x, y, where, patch)


def train_tiny_vit(task: PatchTask, *, epochs: int = 8, seed: int = 0, **arch: int) -> TinyViT:
    """Train a :class:`TinyViT` on ``task`` with Adam (seconds on a CPU).

    ``arch`` overrides :class:`TinyViT`'s options. Returns the model in eval mode with no
    ``.grad`` left on its parameters.
    """
    from ..zoo.fitting import fit, one_thread  # here: importing unveil.zoo loads safetensors

    torch.manual_seed(seed)
    model = TinyViT(image_size=task.X.shape[-1], patch=task.patch, **arch)
    with one_thread():
        fit(model, task.X, task.y, epochs=epochs, seed=seed)
    return model
