"""Stream a data set through a function in batches: a tensor (chunked) or an iterable of batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from ..core.batching import BatchSize, resolve_batch_size, run_chunked
from ..core.model import Model, to_tensor
from ..errors import InputError

__all__ = ["stream"]

Consume = Callable[[int, Any, torch.Tensor, "torch.Tensor | None"], None]


def _labels(labels: Any, n: int) -> torch.Tensor | None:
    if labels is None:
        return None
    y = to_tensor(labels, name="labels")
    if y.ndim != 1 or y.shape[0] != n or y.is_floating_point():
        raise InputError(f"labels must be {n} integers, one per row of data; got {y.dtype} of shape {tuple(y.shape)}")
    return y.long()


def stream(
    model: Model,
    data: Any,
    fn: Callable[[torch.Tensor], Any],
    consume: Consume,
    *,
    batch_size: BatchSize = "auto",
    key: tuple[Any, ...] = (),
    labels: Any = None,
) -> int:
    """Call ``consume(start, fn(xb), xb, yb)`` for every batch ``xb`` of ``data``; return rows seen.

    ``data`` is a tensor or array (N, ...) (chunked with ``batch_size``; ``labels`` (N,) may
    accompany it), or an iterable of batches: tensors, or ``(x, y, ...)`` tuples such as a
    ``DataLoader`` yields, whose second item is used as labels. ``fn`` must be free of side
    effects (the automatic batch-size probe calls it on rows it then discards).
    """
    resolve_batch_size(batch_size)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = model.prepare(data, name="data")
        y = _labels(labels, x.shape[0])
        y_dev = None if y is None else y.to(x.device)

        def eat(a: int, b: int, res: Any) -> None:
            consume(a, res, x[a:b], None if y_dev is None else y_dev[a:b])

        run_chunked(lambda a, b: fn(x[a:b]), x.shape[0], consume=eat, batch_size=batch_size,
                    model=model, key=("featurevis", *key, tuple(x.shape[1:])))
        return int(x.shape[0])
    if labels is not None:
        raise InputError("labels= goes with a tensor of data; an iterable should yield (x, y) pairs")
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes, dict)):
        raise InputError(f"data must be a tensor (N, ...) or an iterable of batches, got {type(data).__name__}")
    seen = 0
    for item in data:
        xb_raw, yb_raw = (item[0], item[1] if len(item) > 1 else None) if isinstance(item, (tuple, list)) else (item, None)
        xb = model.prepare(xb_raw, name="data batch")
        yb = _labels(yb_raw, xb.shape[0])
        consume(seen, fn(xb), xb, None if yb is None else yb.to(xb.device))
        seen += int(xb.shape[0])
    if seen == 0:
        raise InputError("data yielded no batches")
    return seen
