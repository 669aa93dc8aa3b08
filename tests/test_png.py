"""The server's PNG writer (server/png.py): lossless through an independent decoder (Pillow)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from moe_avatar.server.png import encode_png


def _decode(data: bytes) -> tuple[str, np.ndarray]:
    im = Image.open(io.BytesIO(data))
    im.load()  # reads every chunk, checking CRCs and the zlib stream
    return im.mode, np.asarray(im)


@pytest.mark.parametrize("shape", [(1, 1), (64, 64), (256, 256), (3, 17), (37, 5)])
def test_round_trip_is_lossless(shape: tuple[int, int]) -> None:
    """Random pixels: the up filter's differences wrap modulo 256, which every byte value tests."""
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 4), dtype=np.uint8)
    mode, decoded = _decode(encode_png(pixels))
    assert mode == "RGBA" and np.array_equal(decoded, pixels)


def test_flat_avatar_colours_compress() -> None:
    """A texture of flat regions (what avatars are) compresses far below its raw size."""
    pixels = np.zeros((256, 256, 4), np.uint8)
    pixels[:, :, 3] = 255
    pixels[64:192, 64:192] = (250, 180, 200, 255)
    pixels[100:120, 90:110] = (30, 30, 60, 255)
    data = encode_png(pixels)
    assert np.array_equal(_decode(data)[1], pixels)
    assert len(data) < pixels.nbytes / 50


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 4), np.float32), np.zeros((16, 4), np.uint8)])
def test_refuses_what_is_not_rgba8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(bad)
