"""Read a dataset as fixed shards of rows, whatever form it comes in.

Shard ``k`` always holds rows ``[k * size, (k + 1) * size)`` in the source's own order, so a
rerun finds the same shards and can skip the finished ones. Each shard carries the digest of what
was read for it (the rows and labels; for a folder of images, the files' names and bytes), and the
rows of a skipped shard are still read and their digest handed to ``check``, so a resumed run can
tell whether the data changed under it without holding the dataset in memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, require
from ._store import digest_rows, new_hash

__all__ = ["Check", "Shard", "describe_source", "iter_shards"]

Check = Callable[[int, int, int, str], None]
"""``check(index, start, stop, digest)``: called for each skipped shard, after reading its rows."""

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Shard:
    """Rows ``start..stop`` of the source: inputs and, when the source has them, labels."""

    index: int
    start: int
    stop: int
    x: torch.Tensor
    y: np.ndarray | None = None
    digest: str = ""


def _stack(items: list[Any]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.asarray(i) if not isinstance(i, torch.Tensor) else i) for i in items])


def _split_sample(item: Any) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    return item, None


def _from_indexable(get: Any, n: int, size: int, skip: set[int], check: Check | None,
                    digest: Callable[[int, int], str] | None = None) -> Iterator[Shard]:
    """Shards of a source read by ``get(start, stop) -> (x, y)``; ``digest(start, stop)``, when
    given, is the source's own (cheaper) digest of those rows, used for every shard."""
    for k, start in enumerate(range(0, n, size)):
        stop = min(start + size, n)
        if k in skip:
            if check is not None:
                check(k, start, stop, digest(start, stop) if digest is not None else digest_rows(*get(start, stop)))
            continue
        if digest is not None:
            d = digest(start, stop)  # first: an image folder's digest reads the bytes that get() decodes
            x, y = get(start, stop)
        else:
            x, y = get(start, stop)
            d = digest_rows(x, y)
        yield Shard(k, start, stop, x, y, d)


def _image_folder(path: Path) -> tuple[list[Path], Any, Callable[[int, int], str]]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{path} holds no image files ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    image = require("PIL.Image", "viz")
    cache: dict[tuple[int, int], list[bytes]] = {}

    def digest(a: int, b: int) -> str:
        """Names and bytes of the files: no decoding needed to check a finished shard."""
        h, blobs = new_hash(), []
        for f in files[a:b]:
            blob = f.read_bytes()
            h.update(f.name.encode() + b"\0" + len(blob).to_bytes(8, "little"))
            h.update(blob)
            blobs.append(blob)
        cache.clear()
        cache[a, b] = blobs  # load() of the same rows decodes these bytes: each file is read once
        return str(h.hexdigest())

    def load(a: int, b: int) -> tuple[torch.Tensor, None]:
        blobs = cache.pop((a, b), None) or [f.read_bytes() for f in files[a:b]]
        arrs = []
        for blob in blobs:
            with image.open(io.BytesIO(blob)) as im:  # type: ignore[attr-defined]  # require() returns a module
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            arrs.append(arr.transpose(2, 0, 1))
        shapes = {a.shape for a in arrs}
        if len(shapes) > 1:
            raise InputError(f"images in {path} have different sizes {sorted(shapes)}; resize them first")
        return torch.from_numpy(np.stack(arrs)), None

    return files, load, digest


def describe_source(data: Any) -> dict[str, Any]:
    """A JSON description of the source, for the run manifest."""
    if isinstance(data, (str, Path)):
        return {"kind": "path", "path": str(Path(data).resolve())}
    shape = getattr(data, "shape", None)
    return {"kind": type(data).__name__, "shape": list(shape) if shape is not None else None}


def iter_shards(data: Any, size: int, *, skip: set[int] | frozenset[int] = frozenset(),
                label_column: str | None = None,
                check: Check | None = None) -> tuple[int | None, list[str] | None, Iterator[Shard]]:
    """``(n_rows or None, feature names or None, shards)`` for a dataset.

    Accepts a tensor or numpy array, a pandas DataFrame, a torch ``Dataset`` (items ``x`` or
    ``(x, y)``), a ``DataLoader`` without shuffling, a CSV file, or a folder of images. Shards
    in ``skip`` are not yielded; with ``check`` given, their rows are read and hashed and
    ``check(index, start, stop, digest)`` is called in their place, in row order.
    """
    skip = set(skip)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            files, load, digest = _image_folder(path)
            return len(files), None, _from_indexable(load, len(files), size, skip, check, digest)
        if path.suffix.lower() == ".csv":
            pd = require("pandas", "audit")
            data = pd.read_csv(path)  # type: ignore[attr-defined]
        else:
            raise InputError(f"{path} is neither a folder of images nor a .csv file")
    if type(data).__name__ == "DataFrame":
        y = None
        if label_column is not None:
            y = data[label_column].to_numpy()
            data = data.drop(columns=[label_column])
        names = [str(c) for c in data.columns]
        try:
            arr = data.to_numpy(dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("the table has non-numeric columns; encode them as numbers first") from None
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # pandas may hand out a read-only view
        return len(t), names, _from_indexable(lambda a, b: (t[a:b], None if y is None else y[a:b]), len(t), size, skip,
                                           check)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        t = torch.as_tensor(data)
        return len(t), None, _from_indexable(lambda a, b: (t[a:b], None), len(t), size, skip, check)
    if isinstance(data, torch.utils.data.DataLoader):
        if isinstance(data.sampler, torch.utils.data.RandomSampler):
            raise InputError("the DataLoader shuffles; a resumable run needs a fixed order (shuffle=False)")
        return None, None, _from_loader(data, size, skip, check)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        n = len(data)

        def get(a: int, b: int) -> tuple[torch.Tensor, np.ndarray | None]:
            pairs = [_split_sample(data[i]) for i in range(a, b)]  # reading items is I/O, not model work
            ys = [p[1] for p in pairs]
            return _stack([p[0] for p in pairs]), None if ys[0] is None else np.asarray(ys)

        return n, None, _from_indexable(get, n, size, skip, check)
    raise InputError(
        f"cannot read a dataset from {type(data).__name__}; pass a tensor or array, a DataFrame, a "
        "torch Dataset or DataLoader, a CSV path or a folder of images"
    )


def _loader_shard(k: int, start: int, x: torch.Tensor, y: np.ndarray | None, skip: set[int],
                  check: Check | None) -> Shard | None:
    digest = digest_rows(x, y) if check is not None or k not in skip else ""
    if k in skip:
        if check is not None:
            check(k, start, start + len(x), digest)
        return None
    return Shard(k, start, start + len(x), x, y, digest)


def _from_loader(loader: Any, size: int, skip: set[int], check: Check | None) -> Iterator[Shard]:
    buf_x: list[torch.Tensor] = []
    buf_y: list[np.ndarray] = []
    start, k = 0, 0
    for batch in loader:
        x, y = _split_sample(batch)
        buf_x.append(torch.as_tensor(x))
        if y is not None:
            buf_y.append(np.asarray(y))
        while sum(len(b) for b in buf_x) >= size:
            allx = torch.cat(buf_x)
            ally = np.concatenate(buf_y) if buf_y else None
            shard = _loader_shard(k, start, allx[:size], None if ally is None else ally[:size], skip, check)
            if shard is not None:
                yield shard
            buf_x = [allx[size:]]
            buf_y = [ally[size:]] if ally is not None else []
            start, k = start + size, k + 1
    if buf_x and sum(len(b) for b in buf_x):
        allx = torch.cat(buf_x)
        shard = _loader_shard(k, start, allx, np.concatenate(buf_y) if buf_y else None, skip, check)
        if shard is not None:
            yield shard


def _shard_target(target: Any, shard: Shard) -> Any:
    """Per-row targets given for the whole dataset are cut to the shard's rows."""
    if isinstance(target, (list, tuple, np.ndarray, torch.Tensor)):
        return np.asarray(target)[shard.start : shard.stop]
    return target
