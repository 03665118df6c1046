"""Self-contained HTML: coloured tokens and the attention grid."""

from __future__ import annotations

import base64
import re
import struct
import zlib

import numpy as np
import pytest

from unveil.errors import InputError
from unveil.text import attention_grid_html, tokens_html
from unveil.text.html import png_bytes


def _decode_png(data: bytes) -> np.ndarray:
    """Minimal reader for the 8-bit RGB, filter-0 PNGs written by png_bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    assert size is not None
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(_decode_png(png_bytes(img)), img)
    plt = pytest.importorskip("matplotlib.image")  # an independent decoder, when present
    import io

    np.testing.assert_allclose(plt.imread(io.BytesIO(png_bytes(img)), format="png")[..., :3] * 255,
                               img, atol=0.5)


def test_tokens_html_escapes_and_colours():
    page = tokens_html(["<script>", "good", "bad"], [0.0, 2.0, -1.0])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "rgba(202,0,32,1.000)" in page  # strongest positive: full red
    assert "rgba(5,113,176,0.500)" in page  # half as strong negative: half blue
    assert "http" not in page and "<link" not in page  # nothing from the network
    frag = tokens_html(["a"], [1.0], full=False)
    assert not frag.startswith("<!DOCTYPE")


def test_attention_grid_is_self_contained_and_exact():
    rng = np.random.default_rng(1)
    probs = rng.random((2, 3, 6, 6))
    probs /= probs.sum(-1, keepdims=True)
    page = attention_grid_html(probs, [f"t{i}" for i in range(6)])
    uris = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(uris) == 2 * (3 + 1)  # heads + mean per layer
    first = _decode_png(base64.b64decode(uris[0]))
    m = probs[0, 0] / probs[0, 0].max()
    expected = np.round(255 - m[..., None] * (255 - np.array([8, 48, 107])))
    np.testing.assert_array_equal(first, expected.astype(np.uint8))
    assert "http" not in page and '"t5"' in page


def test_attention_grid_pools_long_sequences():
    probs = np.full((1, 1, 300, 300), 1 / 300)
    page = attention_grid_html(probs, max_pixels=100)
    img = _decode_png(base64.b64decode(re.findall(r"base64,([^']+)'", page)[0]))
    assert img.shape == (100, 100, 3)


def test_html_errors():
    with pytest.raises(InputError, match="one score per token"):
        tokens_html(["a", "b"], [1.0])
    with pytest.raises(InputError, match="NaN"):
        tokens_html(["a"], [float("nan")])
    with pytest.raises(InputError, match=r"\(layers, heads, T, T\)"):
        attention_grid_html(np.ones((2, 3, 4)))
    with pytest.raises(InputError, match="3 tokens for maps over 4"):
        attention_grid_html(np.ones((1, 1, 4, 4)), ["a", "b", "c"])
