"""A minimal PNG encoder (RGB/RGBA ``uint8``) and ``data:`` URIs, so reports need no imaging library.

The format is the W3C PNG specification: signature, ``IHDR``, one zlib-compressed ``IDAT`` of
filter-0 scanlines, ``IEND``; every chunk closed by its CRC-32.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

__all__ = ["data_uri", "encode_png", "upscale"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W, 4) ``uint8`` array (floats in [0, 1] are scaled)."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3|4) image, got shape {a.shape}")
    h, w, c = a.shape
    color_type = 2 if c == 3 else 6
    rows = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * c)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def data_uri(rgb: np.ndarray) -> str:
    """``data:image/png;base64,...`` for an image array (see :func:`encode_png`)."""
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii")


def upscale(img: np.ndarray, min_side: int = 128) -> np.ndarray:
    """Nearest-neighbour enlarge (H, W, ...) by an integer factor so the short side reaches
    ``min_side`` (small inputs such as 8x8 digits stay crisp)."""
    h, w = img.shape[:2]
    f = max(1, -(-min_side // max(1, min(h, w))))
    if f == 1:
        return img
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)
