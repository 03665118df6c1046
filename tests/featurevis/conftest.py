"""Feature-visualization tests run many tiny optimisation steps: one thread is fastest for
them and avoids thread contention on a shared machine; the previous setting is restored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
