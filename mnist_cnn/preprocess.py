"""Any user image → MNIST-like 28×28 inputs, the way MNIST itself was made.

grey; alpha composited onto white; polarity detected (ink ends bright on dark); crop to the ink; longer side
scaled to 20 px keeping the aspect ratio, anti-aliased; pasted into 28×28 with the centre of mass at the
centre. Pillow does the image operations and scipy.ndimage the centre of mass.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_cnn import MnistCnnError

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression-bomb guard)
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def open_image(src: str | Path | bytes) -> Image.Image:
    """Open a file path or bytes as a PIL image; raise MnistCnnError with a one-line reason."""
    name = "image" if isinstance(src, (bytes, bytearray)) else str(src)
    try:
        img = Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)
        img.load()
    except FileNotFoundError:
        raise MnistCnnError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise MnistCnnError(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise MnistCnnError(f"{name}: not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP…)") from None
    except Image.DecompressionBombError:
        raise MnistCnnError(f"{name}: image too large (over {MAX_PIXELS:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MnistCnnError(f"{name}: unreadable image ({e})") from None
    return img


def to_grey(img: Image.Image) -> np.ndarray:
    """(H,W) float32 in [0,1], transparency composited onto white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float32)
        return a / max(float(a.max()), 1.0)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Ink bright on dark: invert when the background (the border pixels' median) is light."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return 1.0 - grey if np.median(border) > 0.5 else grey


def normalise(ink: np.ndarray, threshold: float = 0.1) -> np.ndarray | None:
    """Crop to the ink, fit in 20×20 keeping the aspect ratio, centre the mass in 28×28; None if blank."""
    from scipy import ndimage

    ink = ink - ink.min()
    if ink.max() <= 0:
        return None
    ink = ink / ink.max()
    rows, cols = np.nonzero(ink > threshold)
    if rows.size == 0:
        return None
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS),
                       dtype=np.float32) / 255.0
    out = np.zeros((28, 28), np.float32)
    top, left = (28 - size[1]) // 2, (28 - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = small
    cy, cx = ndimage.center_of_mass(out)
    out = ndimage.shift(out, (13.5 - cy, 13.5 - cx), order=1, mode="constant")
    return np.clip(out, 0.0, 1.0)


def to_mnist(src: str | Path | bytes | Image.Image) -> np.ndarray:
    """A user's image → (k,28,28) float32 in [0,1], ink bright on dark; k=0 when no ink is found."""
    img = src if isinstance(src, Image.Image) else open_image(src)
    digit = normalise(ink_map(to_grey(img)))
    return np.zeros((0, 28, 28), np.float32) if digit is None else digit[None]
