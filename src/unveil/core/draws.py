"""Random draws that do not depend on how the work is chunked (counter-based streams).

A stream is an endless sequence of draws named by ``(seed, stream)``. It is cut into pieces of
a fixed number of draws; piece ``k`` comes from a CPU generator seeded with a hash of
``(seed, stream, k)``. Draws ``start .. stop`` of a stream are therefore the same whichever
chunk asks for them, so a method can draw per chunk (memory bounded by the chunk) and still
give the same answer for any batch size, memory budget or device. Only whole pieces are
generated: a chunk that starts or ends inside a piece generates that piece in full and keeps
its part, so choose ``piece`` small for streams read in small chunks (one scalar per sample)
and large for noise the size of an input (the default, 65536 draws, costs a few microseconds
of Python per quarter millisecond of drawing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["PIECE", "integers", "normal", "piece_for", "resolve_seed", "uniform"]

#: Draws per piece of a stream (the default).
PIECE = 1 << 16
_MASK = (1 << 64) - 1


def resolve_seed(seed: int | None) -> int:
    """``seed`` as an int, or a fresh one from torch's global generator (so that it can be
    recorded in ``exp.seed``, and ``torch.manual_seed`` makes unseeded calls repeatable)."""
    if seed is None:
        return int(torch.randint(0, 2**31 - 1, ()).item())
    return int(seed)


def piece_for(row_size: int) -> int:
    """A piece size for a stream read in whole rows of ``row_size`` draws: about 16 rows, a
    power of two from 1024 to :data:`PIECE` (it depends on the row's size only, never on the
    chunking)."""
    return min(PIECE, max(1024, 1 << (16 * max(1, row_size) - 1).bit_length()))


def _mix(x: int) -> int:
    """The splitmix64 finaliser: a 64-bit hash whose nearby inputs give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def piece_seed(seed: int, stream: int, k: int) -> int:
    """The generator seed of piece ``k`` of stream ``(seed, stream)``."""
    return _mix(_mix(_mix(int(seed) & _MASK) ^ int(stream)) ^ int(k))


def _draw(
    seed: int, start: int, stop: int, *, stream: int, piece: int, dtype: torch.dtype,
    fill: Callable[[torch.Tensor, torch.Generator], object], device: torch.device | str | None,
) -> torch.Tensor:
    if start < 0 or stop < start:
        raise ValueError(f"draws {start}..{stop} are not a range of a stream")
    out = torch.empty(stop - start, dtype=dtype)
    g = torch.Generator(device="cpu")
    buf: torch.Tensor | None = None
    for k in range(start // piece, -(-stop // piece)):
        lo, hi = k * piece, (k + 1) * piece
        g.manual_seed(piece_seed(seed, stream, k))
        if lo >= start and hi <= stop:  # a whole piece: drawn in place
            fill(out[lo - start:hi - start], g)
            continue
        if buf is None:
            buf = torch.empty(piece, dtype=dtype)
        fill(buf, g)
        a, b = max(lo, start), min(hi, stop)
        out[a - start:b - start] = buf[a - lo:b - lo]
    return out if device is None else out.to(device)


def normal(
    seed: int, start: int, stop: int, *, stream: int = 0, piece: int = PIECE,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normal draws ``start .. stop`` (1-D) of stream ``(seed, stream)``."""
    return _draw(seed, start, stop, stream=stream, piece=piece, dtype=dtype, device=device,
                 fill=lambda t, g: t.normal_(generator=g))


def uniform(
    seed: int, start: int, stop: int, *, stream: int = 0, piece: int = PIECE,
    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform draws in [0, 1), ``start .. stop`` (1-D) of stream ``(seed, stream)``."""
    return _draw(seed, start, stop, stream=stream, piece=piece, dtype=dtype, device=device,
                 fill=lambda t, g: t.uniform_(generator=g))


def integers(
    seed: int, start: int, stop: int, high: int, *, stream: int = 0, piece: int = PIECE,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integers uniform in ``0 .. high - 1`` (int64), draws ``start .. stop`` of the stream."""
    return _draw(seed, start, stop, stream=stream, piece=piece, dtype=torch.int64, device=device,
                 fill=lambda t, g: t.random_(0, int(high), generator=g))
