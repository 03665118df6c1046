"""The PNG encoder against Pillow's decoder (the reference)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from unveil.report.png import data_uri, encode_png, upscale


@pytest.mark.parametrize("channels,mode", [(3, "RGB"), (4, "RGBA")])
def test_round_trip_exact(channels: int, mode: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(7, 13, channels), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(a))) as im:
        assert im.mode == mode and im.size == (13, 7)
        assert np.array_equal(np.asarray(im), a)


def test_floats_are_scaled_and_clipped() -> None:
    a = np.array([[[0.0, 0.5, 1.0], [-1.0, 2.0, 0.25]]])
    with Image.open(io.BytesIO(encode_png(a))) as im:
        got = np.asarray(im)
    assert got.tolist() == [[[0, 128, 255], [0, 255, 64]]]


def test_grey_becomes_rgb_and_bad_shape_raises() -> None:
    with Image.open(io.BytesIO(encode_png(np.full((2, 2), 9, np.uint8)))) as im:
        assert im.mode == "RGB" and np.asarray(im)[0, 0].tolist() == [9, 9, 9]
    with pytest.raises(ValueError, match="expected an"):
        encode_png(np.zeros((2, 2, 2), np.uint8))


def test_data_uri_and_upscale() -> None:
    assert data_uri(np.zeros((1, 1, 3), np.uint8)).startswith("data:image/png;base64,")
    img = np.arange(6).reshape(2, 3)
    big = upscale(img, 8)  # factor ceil(8 / 2) = 4
    assert big.shape == (8, 12) and np.array_equal(big[::4, ::4], img)
    assert upscale(np.zeros((200, 300)), 128).shape == (200, 300)
