"""Hypothesis strategies for the image decoder and preprocessing: damaged real images and random pictures.

Used by tests/test_fuzz.py (a short seeded slice) and bench/bench_fuzz.py (10,000 inputs and more). The
property both check is ``check_to_mnist``: any bytes give (k,28,28) finite values in [0,1] or an MnistCnnError,
never another exception.
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from mnist_cnn import MnistCnnError
from mnist_cnn.preprocess import to_mnist

FORMATS = ("PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP", "PPM")


def _seed_image() -> Image.Image:
    img = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(img).line([(14, 14), (50, 14), (26, 54)], fill=0, width=6)
    return img


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    (img.convert("RGB") if fmt == "JPEG" else img).save(buf, fmt)
    return buf.getvalue()


SEEDS = {fmt: _encode(_seed_image(), fmt) for fmt in FORMATS}


@st.composite
def damaged_images(draw) -> bytes:
    """A valid image of one format with a few byte edits (overwrite, insert, delete) and maybe truncated."""
    data = bytearray(SEEDS[draw(st.sampled_from(FORMATS))])
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos:pos + draw(st.integers(0, 4))] = draw(st.binary(max_size=4))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def random_pictures(draw) -> bytes:
    """A small random picture (grey, RGB or RGBA; any size up to 80 px) encoded in one of the formats."""
    h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA"]))
    seed = draw(st.integers(0, 2**32 - 1))
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (h, w, *channels), dtype=np.uint8)
    if draw(st.booleans()):  # mostly one colour with a few blobs: closer to a drawing than noise
        pixels[:] = pixels.reshape(-1, *channels)[0]
        for _ in range(draw(st.integers(1, 4))):
            y, x = rng.integers(0, h), rng.integers(0, w)
            pixels[y:y + rng.integers(1, 20), x:x + rng.integers(1, 20)] = rng.integers(0, 256)
    fmt = draw(st.sampled_from(["PNG", "TIFF", "WEBP"] + (["JPEG", "BMP"] if mode != "RGBA" else [])))
    return _encode(Image.fromarray(pixels, mode), fmt)


inputs = st.one_of(damaged_images(), random_pictures(), st.binary(max_size=256))


def check_to_mnist(data: bytes) -> str:
    """The property: an outcome name ("digits", "no digit" or the error type); anything else raises."""
    try:
        out = to_mnist(data)
    except MnistCnnError as e:
        assert "\n" not in str(e) and " at 0x" not in str(e), str(e)
        return type(e).__name__
    assert out.dtype == np.float32 and out.shape[1:] == (28, 28), out.shape
    assert np.isfinite(out).all() and ((out >= 0.0) & (out <= 1.0)).all()
    return "digits" if len(out) else "no digit"
