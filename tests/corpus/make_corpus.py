"""Hostile and careless inputs for the image readers: ``python tests/corpus/make_corpus.py OUT_DIR``.

Writes one file (or special file) per kind into OUT_DIR, all generated here from a seed: nothing binary is
kept in the repository. ``KINDS`` names each kind and what a reader must answer: ``"error"`` (a one-line
error, or an HTTP 4xx), ``"digit"`` (a prediction, whatever the digit, or "no digit found") or ``"any"``
(either). Special files (a FIFO, a symlink loop, a link to /dev/zero) are made only on POSIX systems and are
not sent over HTTP (``SPECIAL``).
"""

from __future__ import annotations

import io
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SEED = 20261202
SPECIAL = {"fifo.png", "symlink_loop.png", "dev_zero.png"}


def _digit(size: int = 112) -> Image.Image:
    """A drawn 7, black on white: what a valid upload looks like."""
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    s = size / 112
    d.line([(25 * s, 25 * s), (85 * s, 25 * s), (45 * s, 95 * s)], fill=0, width=max(1, int(9 * s)))
    return img


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunks(width: int, height: int, payload: bytes, colour_type: int = 0, depth: int = 8) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", payload) + chunk(b"IEND", b"")


def _bomb(side: int, colour_type: int, bands: int) -> bytes:
    """A valid PNG of side×side white pixels, a few hundred kB. Compressing the rows one by one would take
    seconds: a chunk of rows is compressed once and its deflate block repeated (a full flush resets the
    dictionary, so identical input gives identical blocks), then the zlib checksum is fixed up."""
    rows = 64
    chunk = (b"\0" + b"\xff" * (side * bands)) * rows
    n, rest = divmod(side, rows)
    z = zlib.compressobj(9)
    first = z.compress(chunk) + z.flush(zlib.Z_FULL_FLUSH)
    middle = z.compress(chunk) + z.flush(zlib.Z_FULL_FLUSH)
    last = z.compress(chunk[: rest * len(chunk) // rows]) + z.flush()
    adler = 1
    for _ in range(n):
        adler = zlib.adler32(chunk, adler)
    adler = zlib.adler32(chunk[: rest * len(chunk) // rows], adler)
    payload = first + middle * (n - 1) + last[:-4] + struct.pack(">I", adler)
    return _png_chunks(side, side, payload, colour_type)


def _float_tiff(fill: float) -> bytes:
    a = np.where(np.asarray(_digit(56)) < 128, fill, 0.0).astype(np.float32)
    return _enc(Image.fromarray(a, "F"), "TIFF")


def _frames(fmt: str, **kw) -> bytes:
    frames = [_digit(), _digit().rotate(45, fillcolor=255), Image.new("L", (112, 112), 255)]
    return _enc(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)


def _exif_garbage() -> bytes:
    data = bytearray(_enc(_digit().convert("RGB"), "JPEG", exif=b"Exif\0\0" + b"MM\0*\0\0\0\x08" + bytes(64)))
    at = data.find(b"MM\0*")
    data[at + 8:at + 40] = np.random.default_rng(SEED).integers(0, 256, 32, dtype=np.uint8).tobytes()
    return bytes(data)


def _flipped(data: bytes, count: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for pos in rng.integers(16, len(out), count):
        out[pos] ^= 0xFF
    return bytes(out)


def kinds() -> dict[str, tuple[str, callable]]:
    """{file name: (expected answer, a function returning its bytes)}."""
    digit, rng = _digit(), np.random.default_rng(SEED)
    png = _enc(digit, "PNG")
    jpeg = _enc(digit.convert("RGB"), "JPEG", quality=90)
    rgba = digit.convert("RGBA")
    side = math.isqrt(64_000_000)
    return {
        "valid.png": ("digit", lambda: png),
        "empty.png": ("error", lambda: b""),
        "one_byte.png": ("error", lambda: b"\x89"),
        "truncated_half.png": ("error", lambda: png[: len(png) // 2]),
        "truncated_header.png": ("error", lambda: png[:20]),
        "truncated_half.jpg": ("any", lambda: jpeg[: len(jpeg) // 2]),
        "truncated_header.jpg": ("error", lambda: jpeg[:300]),
        "jpeg_named.png": ("digit", lambda: jpeg),
        "png_named.jpg": ("digit", lambda: png),
        "text.png": ("error", lambda: b"hello, this is not an image\n" * 20),
        "page.html": ("error", lambda: b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"),
        "drawing.svg": ("error", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0L9 9"/></svg>'),
        "svg_named.png": ("error", lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'),
        "doc.pdf": ("error", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"),
        "zip.png": ("error", lambda: b"PK\x03\x04" + bytes(100)),
        "one_pixel.png": ("any", lambda: _enc(Image.new("L", (1, 1), 0), "PNG")),
        "line_1x10000.png": ("any", lambda: _enc(Image.new("L", (1, 10000), 0), "PNG")),
        "line_10000x1.png": ("any", lambda: _enc(Image.new("L", (10000, 1), 0), "PNG")),
        "header_400M_pixels.png": ("error", lambda: _png_chunks(20000, 20000, zlib.compress(b"\0" * 64))),
        "header_max_width.png": ("error", lambda: _png_chunks(2**31 - 1, 1, zlib.compress(b"\0" * 64))),
        "header_zero_size.png": ("error", lambda: _png_chunks(0, 0, zlib.compress(b""))),
        "bomb_grey.png": ("error", lambda: _bomb(side + 64, 0, 1)),
        "bomb_rgba.png": ("error", lambda: _bomb(7999, 6, 4)),
        "bomb_rgb_under_limit.png": ("any", lambda: _bomb(4000, 2, 3)),
        "bad_zlib.png": ("error", lambda: _png_chunks(28, 28, b"not zlib at all")),
        "bit_flips.png": ("any", lambda: _flipped(png, 8, SEED)),
        "bit_flips.jpg": ("any", lambda: _flipped(jpeg, 8, SEED)),
        "grey16.png": ("digit", lambda: _enc(Image.fromarray((np.asarray(digit, np.uint16) * 257)), "PNG")),
        "cmyk.jpg": ("digit", lambda: _enc(digit.convert("CMYK"), "JPEG")),
        "cmyk.tif": ("digit", lambda: _enc(digit.convert("CMYK"), "TIFF")),
        "palette_transparent.png": ("digit", lambda: _enc(digit.convert("P"), "PNG", transparency=255)),
        "fully_transparent.png": ("any", lambda: _enc(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG")),
        "alpha_digit.png": ("digit", lambda: _enc(Image.merge("RGBA", [*rgba.split()[:3], digit.point(lambda v: 255 - v)]), "PNG")),
        "animated.gif": ("digit", lambda: _frames("GIF", duration=100, loop=0)),
        "animated.png": ("digit", lambda: _frames("PNG", duration=100)),
        "multipage.tif": ("digit", lambda: _frames("TIFF")),
        "lossy.webp": ("digit", lambda: _enc(digit, "WEBP", quality=80)),
        "bitmap.bmp": ("digit", lambda: _enc(digit, "BMP")),
        "exif_garbage.jpg": ("any", _exif_garbage),
        "exif_rotated.jpg": ("digit", lambda: _enc(digit.convert("RGB"), "JPEG", exif=_orientation_exif(6))),
        "all_white.png": ("any", lambda: _enc(Image.new("L", (100, 100), 255), "PNG")),
        "all_black.png": ("any", lambda: _enc(Image.new("L", (100, 100), 0), "PNG")),
        "noise.png": ("any", lambda: _enc(Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)), "PNG")),
        "noise_rgb.jpg": ("any", lambda: _enc(Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)), "JPEG")),
        "nan.tif": ("error", lambda: _float_tiff(np.nan)),
        "inf.tif": ("error", lambda: _float_tiff(np.inf)),
        "float_ok.tif": ("digit", lambda: _float_tiff(1.0)),
        "mode_1bit.png": ("digit", lambda: _enc(digit.convert("1"), "PNG")),
        "ico.ico": ("any", lambda: _enc(digit.convert("RGBA").resize((64, 64)), "ICO")),
        "random_bytes.png": ("error", lambda: rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()),
        "fifo.png": ("error", None),
        "symlink_loop.png": ("error", None),
        "dev_zero.png": ("error", None),
    }


def _orientation_exif(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def make_corpus(out: Path) -> dict[str, str]:
    """Write every kind into ``out``; returns {file name: expected answer}."""
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (answer, make) in kinds().items():
        path = out / name
        if make is not None:
            path.write_bytes(make())
        elif os.name != "posix":
            continue
        elif name == "fifo.png":
            os.mkfifo(path)
        elif name == "symlink_loop.png":
            os.symlink(path.name, path)
        elif name == "dev_zero.png":
            os.symlink("/dev/zero", path)
        expected[name] = answer
    return expected


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    made = make_corpus(Path(sys.argv[1]))
    print(f"{len(made)} kinds written to {sys.argv[1]}")
