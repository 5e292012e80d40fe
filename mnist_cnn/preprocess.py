"""Any user image → MNIST-like 28×28 digits: ``to_mnist("photo.jpg")`` → (k,28,28) float32, ink bright.

    PYTHONPATH=. python -c "from mnist_cnn.preprocess import to_mnist; print(to_mnist('samples/7_mnist_test_0017.png').shape)"

MNIST was made by fitting each digit in a 20×20 box keeping its aspect ratio (anti-aliased) and placing it in
28×28 with its centre of mass on pixel (14, 14): on the 10,000 test digits the centre of mass (row, col in
pixel indices) lies in [13.5, 14.5], mean 14.0 (an integer shift), and the longer side of the ink's box is 20
in 99.97 %. This module repeats that recipe after turning a photo or drawing into a clean ink map:

1. ``open_image``: Pillow decodes (every format, first frame of animations); refuses SVG, text, truncated files
   and images over ``MAX_PIXELS`` (checked from the header, before decoding: bounded memory). Big JPEGs are
   decoded at 1/2-1/8 scale (draft mode) and the rest shrunk with ``reduce`` to about ``WORK_SIDE`` pixels.
2. ``to_array``/``to_grey``: EXIF orientation applied; 16-bit, CMYK, palette, grey all handled; transparency
   composited onto white (onto black when the strokes themselves are light); colour projected on its first
   principal component, so coloured ink on coloured paper keeps its contrast.
3. ``segment.ink_map``: uneven light and shadows taken out (robust quadratic fit of the paper, an opening for
   what is broader than 4 strokes); polarity detected (ink is the minority); a sheet on a table cut out (convex
   hull of the paper); a noise-aware ramp (Otsu, 3σ floor) maps paper → 0, ink → 1.
4. ``segment.find_digits``: connected components; specks and frame lines along the border dropped; pieces of
   one digit (overlapping in x, or a detached bar) merged; left to right. ``single=True``: all ink, one digit.
5. ``normalise``: crop; strokes outside MNIST's usual width (a thin pen line shrunk from a big photo, a fat
   marker) dilated or eroded towards it; longer side to 20 px (area resampling); centre of mass to (14, 14).

Libraries: Pillow decodes (formats, EXIF, palettes, animations, JPEG draft mode, its bomb guard) and resamples;
pixels.py holds the rest of the pixel work (connected components by cc3d, morphology, Otsu, contour length).
Already MNIST-like images (28×28, clean background, 20-px box) come through unchanged: MNIST test digits as
PNGs give the same accuracy (tests/test_preprocess.py).

Limits: files over 200 MB and images over ``MAX_PIXELS`` = 64 megapixels (e.g. 8000×8000) are refused from
their header, before any decoding. JPEGs above 2048 px are decoded at 1/2-1/8 scale (draft mode); other images
are reduced to 768-1536 px on the longer side right after decoding. Peak memory is about one decoded image
(bench/RESULTS.md, "Reliability"); a large JPEG's is a fraction of that, decoded at its reduced scale.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_cnn import CorruptImage, MnistCnnError, NotAnImage, TooLarge
from mnist_cnn import pixels
from mnist_cnn.memory import DECODE_BUDGET, MAX_DECODE_BYTES
from mnist_cnn.segment import find_digits, ink_and_sheet, ink_map, stroke_width  # noqa: F401 (re-exported)

MAX_PIXELS = 64_000_000  # header width×height above this is refused before decoding (≈ 8000×8000)
MAX_FILE_BYTES = 200_000_000
WORK_SIDE = 1024  # photos are analysed at about this size (longer side), enough for a few digits
BOX, FIELD, CENTRE = 20, 28, 14.0  # MNIST's box, field and centre-of-mass pixel
# Stroke width in px of the 20-px box (2·area/contour length) of the MNIST test digits: 5 % below 1.64,
# median 2.46, 75 % below 2.9, 95 % below 3.8. Outside 5-95 % a digit shrunk from a big image is re-stroked.
W_THIN, W_TARGET, W_BOLD, W_BOLD_TARGET = 1.6, 2.5, 3.8, 2.9
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# What a folder is searched for, by predict and by the labelled-folder reader alike (a file named on the command
# line is read whatever its name).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".dib", ".tif", ".tiff",
                            ".webp", ".pgm", ".pbm", ".ppm", ".pnm", ".tga", ".ico", ".apng", ".avif", ".qoi"})

_SVG_HINTS = (b"<svg", b"<?xml")


def _name(src) -> str:
    return "image" if isinstance(src, (bytes, bytearray)) else str(src)


def _read(src) -> bytes:
    """A file's bytes: regular files only (a FIFO or /dev/zero would block or never end), at most the limit + 1."""
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    path = Path(src)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise MnistCnnError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MnistCnnError(f"{path}: is a folder, not an image") from None
    except OSError as e:  # permission denied, a symlink loop, a name too long…
        raise MnistCnnError(f"{path}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise MnistCnnError(f"{path}: is a folder, not an image")
        if not stat.S_ISREG(mode):
            raise NotAnImage(f"{path}: not a regular file (a pipe, device or socket)")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise CorruptImage(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise TooLarge(f"{path}: file too large (over {MAX_FILE_BYTES // 1_000_000} MB)")
    return data


def open_image(src: str | Path | bytes | Image.Image) -> Image.Image:
    """A path, bytes or PIL image → a decoded PIL image (first frame, EXIF orientation applied, longer side
    shrunk to about WORK_SIDE); MnistCnnError with a one-line reason."""
    name = _name(src)
    if isinstance(src, Image.Image):
        img = src
    else:
        data = _read(src)
        head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if head.startswith(_SVG_HINTS) and b"<svg" in data[:4096].lower() or name.lower().endswith((".svg", ".svgz")):
            raise NotAnImage(f"{name}: SVG is a vector format, not supported: export it as PNG or JPEG")
        try:
            with warnings.catch_warnings():  # Pillow only warns between MAX_PIXELS and twice that: refuse too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise NotAnImage(f"{name}: not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP…)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise TooLarge(f"{name}: image too large (over {MAX_PIXELS:,} pixels)") from None
        except Exception as e:  # a recognised format whose header is broken: Pillow raises many types
            raise CorruptImage(f"{name}: unreadable image header ({_reason(e)})") from None
    return _decode(img, name)


def _decode(img: Image.Image, name: str) -> Image.Image:
    """Decode (JPEG at a reduced scale when big) and shrink to about WORK_SIDE, within the memory budget."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise TooLarge(f"{name}: image too large ({w}×{h}; the limit is {MAX_PIXELS:,} pixels)")
    try:
        if img.format == "JPEG" and max(w, h) > 2 * WORK_SIDE:  # decode at 1/2-1/8 scale: memory bounded
            scale = WORK_SIDE / max(w, h)
            img.draft(None, (max(1, int(w * scale)), max(1, int(h * scale))))
    except Exception as e:
        raise CorruptImage(f"{name}: unreadable image ({_reason(e)})") from None
    cost = decode_cost(img)
    if cost > MAX_DECODE_BYTES:
        raise TooLarge(f"{name}: image too large to decode ({w}×{h} {img.mode} needs about {cost >> 20} MB; the "
                       f"limit is {MAX_DECODE_BYTES >> 20} MB): send fewer pixels, or a JPEG")
    with DECODE_BUDGET.hold(cost):
        try:
            img.load()
        except Exception as e:  # OSError, SyntaxError, ValueError, EOFError, struct.error… from the decoders
            raise CorruptImage(f"{name}: truncated or unreadable image ({_reason(e)})") from None
        try:
            return _orient_and_shrink(img)
        except Exception as e:  # garbage EXIF, a mode Pillow decodes but cannot convert
            raise CorruptImage(f"{name}: unreadable image ({_reason(e)})") from None


def decode_cost(img: Image.Image) -> int:
    """Bytes that decoding and shrinking ``img`` hold at their peak: Pillow's pixels (1 byte for 1/L/P, 2 for
    16-bit, else 4) plus a 4-byte copy where ``_orient_and_shrink`` converts the mode or reduces with alpha."""
    stored = 1 if img.mode in ("1", "L", "P") else 2 if img.mode.startswith("I;16") else 4
    copy = 0 if img.mode in ("L", "RGB", "I", "F") else 4
    return img.width * img.height * (stored + copy)


def _reason(e: Exception) -> str:
    """An exception as a short reason for a user: its message's first line, never an object's repr."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return type(e).__name__ if not text or " at 0x" in text or len(text) > 120 else text


def _orient_and_shrink(img: Image.Image) -> Image.Image:
    """EXIF orientation; modes reduce() accepts; longer side shrunk to about WORK_SIDE (0.75-1.5×)."""
    orientation = img.getexif().get(0x0112, 1)
    if orientation in range(2, 9):
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    elif img.mode in ("P", "PA", "La", "RGBa") :
        img = img.convert("RGBA" if img.mode != "P" or "transparency" in img.info else "RGB")
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.convert("RGB")  # 1, CMYK, YCbCr, LAB, HSV
    factor = int(max(img.size) / WORK_SIDE + 0.5)
    return img.reduce(factor) if factor >= 2 else img


def to_array(img: Image.Image, name: str = "image") -> np.ndarray:
    """A decoded image (``open_image``) → (H,W,C) float32 in [0,1], C = 1 or 3, transparency composited away."""
    a = np.asarray(img, dtype=np.float32)
    if img.mode in ("I", "F"):
        if not np.isfinite(a).all():
            raise CorruptImage(f"{name}: NaN or infinite pixel values (a float image with no valid brightness)")
        hi = float(a.max())
        a = np.clip(a / (255.0 if hi <= 255 else 65535.0 if hi <= 65535 else hi), 0.0, 1.0)
    else:
        a = a / 255.0  # 8-bit: already in [0, 1]
    a = a.reshape(a.shape[0], a.shape[1], -1)
    if a.shape[2] in (2, 4):
        a = np.clip(_composite(a[..., :-1], a[..., -1:]), 0.0, 1.0)  # float rounding may pass 1 by an ulp
    return a


def _composite(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Onto white, or onto black when the opaque strokes are light (white ink on a transparent canvas)."""
    if alpha.min() > 0.98:
        return colour
    weight = float(alpha.sum())
    ink_level = float((colour.mean(axis=2, keepdims=True) * alpha).sum()) / weight if weight else 0.0
    paper = 0.0 if ink_level > 0.5 else 1.0
    return colour * alpha + paper * (1.0 - alpha)


def to_grey(a: np.ndarray) -> np.ndarray:
    """(H,W) in [0,1]: colour projected on its first principal component (the ink/paper axis)."""
    if a.shape[2] == 1:
        return a[..., 0]
    if a.shape[0] * a.shape[1] < 3:
        return a.mean(axis=2)
    sample = a.reshape(-1, 3)[:: max(1, a.shape[0] * a.shape[1] // 20_000)]
    cov = np.cov(sample, rowvar=False)
    if not np.isfinite(cov).all() or np.trace(cov) < 1e-8:
        return a.mean(axis=2)
    v = np.linalg.eigh(cov)[1][:, -1]
    v = v if v.sum() >= 0 else -v  # brighter stays brighter
    lo = float(np.minimum(v, 0).sum())
    return (a @ v.astype(np.float32) - lo) / float(np.abs(v).sum())


def _restroke(crop: np.ndarray, width: float, target: float) -> np.ndarray:
    """Dilate or erode the strokes (``width`` px in the 20-px box) to ``target``, at 4× the final scale."""
    given = crop
    h, w = crop.shape
    f = min(1.0, 4 * BOX / max(h, w))
    if f < 1:
        crop = pixels.resize(crop, (max(1, round(w * f)), max(1, round(h * f))))
        core = crop[crop > 0.1 * crop.max()]  # a line thinner than a pixel here: bring its core back to full ink
        crop = np.clip(crop / max(float(np.quantile(core, 0.75)), 1e-6), 0.0, 1.0)
    r = max(1, round(abs(target - width) * max(crop.shape) / BOX / 2))
    kernel = pixels.ellipse(2 * r + 1)
    crop = pixels.dilate(np.pad(crop, r), kernel) if target > width else pixels.erode(crop, kernel)
    rows, cols = np.nonzero(crop > 0.02)
    if not rows.size:  # eroded away (specks the estimator measured as bold): kept as they were, not emptied
        return given
    return crop[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def normalise(crop: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """One digit's ink → (28,28): longer side 20 px keeping the aspect ratio, centre of mass on (14, 14)."""
    side = max(crop.shape)
    if side > FIELD and mask is not None:  # shrunk from a bigger image: strokes within MNIST's usual range
        width = stroke_width(mask & (crop >= 0.5)) * BOX / side  # half-ink: blur does not widen it
        if not W_THIN <= width <= W_BOLD:
            crop = _restroke(crop, width, W_TARGET if width < W_THIN else W_BOLD_TARGET)
    h, w = crop.shape
    side = max(h, w)
    if side != BOX:
        size = (max(1, round(w * BOX / side)), max(1, round(h * BOX / side)))
        crop = pixels.resize(crop, size, "area" if side > BOX else "linear")
    return _centre(crop / max(float(crop.max()), 1e-6))  # in [0, 1]: area and linear resizing never undershoot 0


def _centre(digit: np.ndarray) -> np.ndarray:
    """Paste into 28×28 with an integer shift putting the centre of mass within 0.5 px of (14, 14), as MNIST."""
    h, w = digit.shape
    total = float(digit.sum())
    cy = float(digit.sum(1) @ np.arange(h)) / total
    cx = float(digit.sum(0) @ np.arange(w)) / total
    top, left = int(np.floor(CENTRE - cy + 0.5)), int(np.floor(CENTRE - cx + 0.5))
    out = np.zeros((FIELD, FIELD), np.float32)
    ys, xs = slice(max(top, 0), min(top + h, FIELD)), slice(max(left, 0), min(left + w, FIELD))
    out[ys, xs] = digit[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]
    return out


def to_mnist(src: str | Path | bytes | Image.Image, single: bool = False) -> np.ndarray:
    """A user's image → (k,28,28) float32 in [0,1], ink bright on dark, digits left to right; k=0: no digit.

    ``single=True`` treats all the ink as one digit. Raises MnistCnnError for unreadable or unsupported input.
    """
    ink, sheet = ink_and_sheet(to_grey(to_array(open_image(src), _name(src))))
    digits = [] if ink is None else [normalise(crop, mask) for crop, mask in find_digits(ink, single, sheet)]
    return np.stack(digits) if digits else np.zeros((0, FIELD, FIELD), np.float32)
