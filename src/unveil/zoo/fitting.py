"""Training loop shared by the tiny example transformers (text and vision): `fit`, `one_thread`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["fit", "one_thread"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread (restored after).

    Tiny models train fastest single-threaded; on a loaded machine several threads per step
    can be 20x slower.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int,
        lr: float = 3e-3, batch: int = 64) -> None:
    """Minimise cross-entropy with Adam; leaves ``model`` in eval mode with no ``.grad``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]  # torch stubs leave it untyped
            opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
