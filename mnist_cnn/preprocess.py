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
3. ``ink_map``: a robust quadratic fit of the paper removes uneven light; polarity is the side with more
   outlying mass (ink is the minority); broad dark areas (shadows, table beyond the paper edge) are removed by
   a morphological opening wider than 4 strokes; a noise-aware ramp (Otsu, 3σ floor) maps paper → 0, ink → 1.
4. ``find_digits``: connected components; specks and frame lines at the border dropped; components that
   overlap in x (broken strokes) merged; small pieces joined to their neighbour; left to right.
5. ``normalise``: crop; a thin pen line shrunk from a big photo is dilated to MNIST's stroke width (median
   2.5 px in the 20-px box); longer side to 20 px (area resampling); centre of mass to (14, 14).

Library: OpenCV (opencv-python-headless) does the pixel work (connected components with stats, Otsu,
distance-free stroke width from contours, morphology, area resampling), all in C++; it imports in ~0.1 s
where scipy.ndimage takes 0.3-1.2 s here, which keeps the cold ``predict`` CLI fast. Pillow decodes.
Already MNIST-like images (28×28, clean background, 20-px box) come through unchanged.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_cnn import MnistCnnError

MAX_PIXELS = 64_000_000  # header width×height above this is refused before decoding (≈ 8000×8000)
MAX_FILE_BYTES = 200_000_000
WORK_SIDE = 1024  # photos are analysed at about this size (longer side), enough for a few digits
MIN_CONTRAST = 0.08  # ink must differ from the paper by this much (of full scale), else "no digit"
BOX, FIELD, CENTRE = 20, 28, 14.0  # MNIST's box, field and centre-of-mass pixel
W_THIN, W_TARGET = 1.5, 2.5  # stroke width (px in the 20-px box) below which a shrunk line is thickened
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_SVG_HINTS = (b"<svg", b"<?xml")


def _name(src) -> str:
    return "image" if isinstance(src, (bytes, bytearray)) else str(src)


def _read(src) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    path = Path(src)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise MnistCnnError(f"{path}: file too large (over {MAX_FILE_BYTES // 1_000_000} MB)")
        return path.read_bytes()
    except FileNotFoundError:
        raise MnistCnnError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MnistCnnError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise MnistCnnError(f"{path}: permission denied") from None


def open_image(src: str | Path | bytes | Image.Image) -> Image.Image:
    """A path, bytes or PIL image → a decoded PIL image (first frame); MnistCnnError with a one-line reason."""
    name = _name(src)
    if isinstance(src, Image.Image):
        img = src
    else:
        data = _read(src)
        head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if head.startswith(_SVG_HINTS) and b"<svg" in data[:4096].lower() or name.lower().endswith((".svg", ".svgz")):
            raise MnistCnnError(f"{name}: SVG is a vector format, not supported: export it as PNG or JPEG")
        try:
            with warnings.catch_warnings():  # Pillow only warns between MAX_PIXELS and twice that: refuse too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise MnistCnnError(f"{name}: not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP…)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise MnistCnnError(f"{name}: image too large (over {MAX_PIXELS:,} pixels)") from None
    return _decode(img, name)


def _decode(img: Image.Image, name: str) -> Image.Image:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise MnistCnnError(f"{name}: image too large ({w}×{h}; the limit is {MAX_PIXELS:,} pixels)")
    try:
        if img.format == "JPEG" and max(w, h) > 2 * WORK_SIDE:  # decode at 1/2-1/8 scale: memory bounded
            scale = WORK_SIDE / max(w, h)
            img.draft(None, (max(1, int(w * scale)), max(1, int(h * scale))))
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise MnistCnnError(f"{name}: truncated or unreadable image ({e})") from None
    return img


def _orient_and_shrink(img: Image.Image) -> Image.Image:
    """EXIF orientation; modes reduce() accepts; longer side shrunk to [WORK_SIDE, 2·WORK_SIDE)."""
    orientation = img.getexif().get(0x0112, 1)
    if orientation in range(2, 9):
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    elif img.mode in ("P", "PA", "La", "RGBa") :
        img = img.convert("RGBA" if img.mode != "P" or "transparency" in img.info else "RGB")
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.convert("RGB")  # 1, CMYK, YCbCr, LAB, HSV
    factor = max(img.size) // WORK_SIDE
    return img.reduce(factor) if factor >= 2 else img


def to_array(img: Image.Image) -> np.ndarray:
    """(H,W,C) float32 in [0,1], C = 1 or 3, transparency composited away."""
    img = _orient_and_shrink(img)
    a = np.asarray(img, dtype=np.float32)
    if img.mode in ("I", "F"):
        hi = float(a.max())
        a = a / (255.0 if hi <= 255 else 65535.0 if hi <= 65535 else hi)
    else:
        a = a / 255.0
    a = a.reshape(a.shape[0], a.shape[1], -1)
    if a.shape[2] in (2, 4):
        a = _composite(a[..., :-1], a[..., -1:])
    return np.clip(a, 0.0, 1.0)


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
    sample = a.reshape(-1, 3)[:: max(1, a.shape[0] * a.shape[1] // 20_000)]
    cov = np.cov(sample, rowvar=False)
    if not np.isfinite(cov).all() or np.trace(cov) < 1e-8:
        return a.mean(axis=2)
    v = np.linalg.eigh(cov)[1][:, -1]
    v = v if v.sum() >= 0 else -v  # brighter stays brighter
    lo = float(np.minimum(v, 0).sum())
    return (a @ v.astype(np.float32) - lo) / float(np.abs(v).sum())


def _fit_paper(g: np.ndarray) -> np.ndarray:
    """Robust quadratic fit of the paper's brightness (ink is the minority) → (H,W) surface."""
    import cv2

    h, w = g.shape
    s = min(1.0, 48 / max(h, w))  # fit on a ≤ 48-px thumbnail: shading is smooth
    small = cv2.resize(g, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else g
    yy, xx = np.mgrid[-1:1:small.shape[0] * 1j, -1:1:small.shape[1] * 1j]
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], -1).reshape(-1, 6)
    z = small.ravel().astype(np.float64)
    r, keep = z - np.median(z), None  # start from the median (the paper): the surface never bends to the ink
    for _ in range(4):  # refit on the pixels within 3σ of the surface: ink and glare drop out
        sigma = max(1.4826 * float(np.median(np.abs(r))), 2e-3)
        new_keep = np.abs(r) < 3 * sigma
        if new_keep.sum() < 12 or (keep is not None and (new_keep == keep).all()):
            break
        keep = new_keep
        a = basis[keep]
        coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(6), a.T @ z[keep])
        r = z - basis @ coef
    surface = (z - r).reshape(small.shape).astype(np.float32)
    if s < 1:
        surface = cv2.resize(surface, (w, h), interpolation=cv2.INTER_LINEAR)
    return surface


def _noise(g: np.ndarray) -> float:
    """Pixel noise σ from differences of neighbours (robust: edges and shading are a minority)."""
    rows = g[:: max(1, g.shape[0] // 256)]
    d = (rows[:, 1:] - rows[:, :-1]).ravel()
    return max(1.4826 * float(np.median(np.abs(d))) / np.sqrt(2), 2e-3) if d.size else 2e-3


def _otsu(values: np.ndarray) -> float:
    import cv2

    top = float(values.max())
    u8 = np.clip(values / top * 255, 0, 255).astype(np.uint8).reshape(-1, 1)
    return cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255 * top


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: 2·area / contour length (exact for long bars, any width ≥ 1)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    length = sum(cv2.arcLength(c, True) for c in contours)
    return 2.0 * float(mask.sum()) / max(length, 1.0)


def _border_contact(labels: np.ndarray, n: int, sheet: np.ndarray | None = None) -> np.ndarray:
    """Per label, how many of its pixels lie on the image's border, or on the edge of the ``sheet`` mask."""
    edge = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    if sheet is not None:
        import cv2

        rim = cv2.dilate((~sheet).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        edge = np.concatenate([edge, labels[rim]])
    return np.bincount(edge.ravel(), minlength=n)


def _inner_width(mask: np.ndarray, sheet: np.ndarray | None = None) -> float:
    """Stroke width of the ink away from the image's border (the table past a paper edge touches it)."""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    inner = np.flatnonzero(_border_contact(labels, n, sheet) == 0)[1:] if n > 1 else []
    return stroke_width(np.isin(labels, inner) if len(inner) else mask)


def _remove_broad(c: np.ndarray, width: float, level: float) -> np.ndarray:
    """Subtract what is broader than 4 strokes and reaches the image's border (the table past the paper edge,
    shadows): a morphological opening, kept only in its regions above ``level`` that touch the border."""
    import cv2

    k = 4 * width + 3
    f = max(1.0, k / 15)  # run the opening where the kernel is ~15 px: cost bounded on big photos
    h, w = c.shape
    small = cv2.resize(c, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA) if f > 1 else c
    ks = int(k / f) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ks, ks))
    broad = cv2.morphologyEx(small, cv2.MORPH_OPEN, kernel)
    n, labels = cv2.connectedComponents((broad > level).astype(np.uint8), connectivity=8)
    touching = np.flatnonzero(_border_contact(labels, n))
    region = cv2.dilate(np.isin(labels, touching[touching > 0]).astype(np.uint8), kernel)
    if not region.any():
        return c
    broad = np.where(region > 0, np.maximum(broad, 0.0), 0.0).astype(np.float32)
    if f > 1:
        broad = cv2.resize(broad, (w, h), interpolation=cv2.INTER_LINEAR)
    return c - broad


def _on_the_paper(c: np.ndarray, level: float) -> np.ndarray | None:
    """The sheet in a photo: convex hull of the largest background region, at ≤ 256 px. None unless what lies
    off it is ≥ 10 % of the frame and mostly not background (a table): scans, canvases, tight crops stay whole."""
    import cv2

    h, w = c.shape
    f = min(1.0, 256 / max(h, w))
    paper = (c < level).astype(np.float32)
    if f < 1:
        paper = cv2.resize(paper, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    paper = (paper > 0.5).astype(np.uint8)
    k = int(0.035 * max(paper.shape)) | 1  # cut narrow bridges to the table: 9 px at 256
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.morphologyEx(paper, cv2.MORPH_OPEN, np.ones((k, k), np.uint8)),
                                                           connectivity=4)
    if n < 2:
        return None
    sheet = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    points = cv2.findNonZero((labels == sheet).astype(np.uint8))
    hull = cv2.fillConvexPoly(np.zeros(paper.shape, np.uint8), cv2.convexHull(points), 1)
    off = hull == 0
    if off.mean() < 0.1 or paper[off].mean() > 0.4:  # what lies off the hull must be mostly not paper (a table)
        return None
    hull = cv2.erode(hull, np.ones((7, 7), np.uint8))  # off the sheet's blurred edge (~1 % of the frame)
    return cv2.resize(hull, (w, h), interpolation=cv2.INTER_NEAREST) > 0


def ink_map(grey: np.ndarray) -> np.ndarray | None:
    """(H,W) grey → (H,W) ink in [0,1], bright on dark, paper 0; None when there is no ink (blank, uniform)."""
    return _ink_and_sheet(grey)[0]


def _ink_and_sheet(grey: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """ink_map, and the mask of the sheet when the photo shows one on a table (else None)."""
    import cv2

    paper = _fit_paper(grey)
    r = grey - paper
    sigma = _noise(grey)
    dark, light = np.clip(-r - 3 * sigma, 0, None).sum(), np.clip(r - 3 * sigma, 0, None).sum()
    # ink is the side with more outlying mass; contrast relative to the light there (paper in shade, same ink)
    scale = np.maximum(paper, 0.1) if dark > light else np.maximum(1.0 - paper, 0.1)
    c = (-r if dark > light else r) / scale
    sigma /= float(np.median(scale))
    if sigma > 0.03:  # visible noise: a light blur keeps strokes and quietens single pixels
        c = cv2.GaussianBlur(c, (0, 0), 1.0)
        sigma *= 0.3  # what a σ=1 Gaussian leaves of white noise (1 / (2·√π) ≈ 0.28)
    if float(c.max()) < max(MIN_CONTRAST, 6 * sigma):
        return None, None
    t = max(_otsu(c[c > 3 * sigma]), 4 * sigma)
    sheet = _on_the_paper(c, 0.5 * t)
    if sheet is not None:  # a sheet on a table: what lies off the sheet is not writing
        c = np.where(sheet, c, 0.0)
    width = min(_inner_width(c > t, sheet), 0.2 * min(grey.shape))
    c = _remove_broad(c, width, 0.5 * t)
    above = c[c > 3 * sigma]
    if above.size == 0 or float(above.max()) < max(MIN_CONTRAST, 6 * sigma):
        return None, None
    t = max(_otsu(above), 4 * sigma)
    lo, hi = 3 * sigma, float(np.quantile(c[c > t], 0.6))  # MNIST: hi ≈ 0.99, so it stays as it is
    return np.clip((c - lo) / max(hi - lo, 1e-6), 0.0, 1.0), sheet


def _components(ink: np.ndarray, sheet: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Labels, stats, ink mass; ids of the components that are strokes (not specks nor frame lines)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((ink >= 0.25).astype(np.uint8), connectivity=8)
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n)
    strong = np.bincount(labels[ink >= 0.5], minlength=n) > 0  # hysteresis: a stroke reaches full ink
    mass[0], strong[0] = 0.0, False
    if not strong.any():
        return labels, stats, mass, []
    ids = [i for i in range(1, n) if strong[i] and mass[i] >= 0.04 * mass[strong].max()]  # specks out
    ids = sorted(ids, key=lambda i: -mass[i])[:40]  # a digit, or a number, is a few pieces
    contact = _border_contact(labels, n, sheet)
    inner = [i for i in ids if contact[i] == 0]
    if inner:  # a digit lies inside: what runs along the border, or outgrows every digit, is edge or frame
        big = 1.5 * stats[inner, 2:4].max(axis=0)  # (width, height) no digit reaches
        ids = [i for i in ids if contact[i] == 0 or contact[i] < 0.1 * min(ink.shape) and (stats[i, 2:4] < big).all()]
    return labels, stats, mass, ids


def _same_digit(a: np.ndarray, b: np.ndarray) -> bool:
    """Two components' boxes (x, y, w, h) are pieces of one digit: they overlap in x by half the narrower one
    (a broken stroke), or they are close in x and either stacked (little vertical overlap) or one is much
    shorter than the other (a detached bar, as in many MNIST 5s). Digits of a number sit side by side."""
    ox = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    oy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    short, tall = sorted((a[3], b[3]))
    return bool(ox >= 0.5 * min(a[2], b[2]) or ox > -0.25 * tall and (oy < 0.25 * short or short < 0.4 * tall))


def _group(stats: np.ndarray, mass: np.ndarray, ids: list[int]) -> list[list[int]]:
    """Components → digits, left to right: pieces of one digit merged, small leftovers joined or dropped."""
    root = {i: i for i in ids}

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    for n, i in enumerate(ids):
        for j in ids[n + 1:]:
            if _same_digit(stats[i], stats[j]):
                root[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in ids:
        groups.setdefault(find(i), []).append(i)
    weight = {g: mass[m].sum() for g, m in groups.items()}
    height = {g: (stats[m, 1] + stats[m, 3]).max() - stats[m, 1].min() for g, m in groups.items()}
    digits = {g: m for g, m in groups.items()  # a thin "1" beside a bold "8" has ~10 % of its ink
              if weight[g] >= 0.08 * max(weight.values()) and height[g] >= 0.4 * max(height.values())}
    span = {g: (stats[m, 0].min(), (stats[m, 0] + stats[m, 2]).max()) for g, m in groups.items()}
    for g, m in groups.items():  # a small leftover belongs to the digit beside it, else it is dropped
        if g not in digits and digits:
            gap = {d: max(span[d][0] - span[g][1], span[g][0] - span[d][1]) for d in digits}
            near = min(gap, key=gap.get)
            if gap[near] <= 0.25 * (span[near][1] - span[near][0]):
                digits[near] = digits[near] + m
    return [digits[g] for g in sorted(digits, key=lambda g: span[g][0])]


def find_digits(ink: np.ndarray, single: bool = False,
                sheet: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crop of the ink, its stroke mask) for each digit, left to right; one for everything when ``single``."""
    import cv2

    labels, stats, mass, ids = _components(ink, sheet)
    if not ids:
        return []
    out = []
    for group in ([ids] if single else _group(stats, mass, ids)):
        x0, y0 = stats[group, 0].min(), stats[group, 1].min()
        x1, y1 = (stats[group, 0] + stats[group, 2]).max(), (stats[group, 1] + stats[group, 3]).max()
        x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, ink.shape[1]), min(y1 + 1, ink.shape[0])
        core = np.isin(labels[y0:y1, x0:x1], group)
        near = cv2.dilate(core.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # keep the anti-aliased rim
        crop = np.where(near, ink[y0:y1, x0:x1], 0.0).astype(np.float32)
        rows, cols = np.nonzero(crop)
        crop = crop[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        out.append((crop, core[rows.min():rows.max() + 1, cols.min():cols.max() + 1]))
    return out


def _thicken(crop: np.ndarray, width: float) -> np.ndarray:
    """Dilate a thin line (``width`` px in the 20-px box) to MNIST's width, at 4× the final scale."""
    import cv2

    h, w = crop.shape
    f = min(1.0, 4 * BOX / max(h, w))
    if f < 1:
        crop = cv2.resize(crop, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        core = crop[crop > 0.1 * crop.max()]  # a line thinner than a pixel here: bring its core back to full ink
        crop = np.clip(crop / max(float(np.quantile(core, 0.75)), 1e-6), 0.0, 1.0)
    r = max(1, round((W_TARGET - width) * max(crop.shape) / BOX / 2))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(np.pad(crop, r), kernel)


def normalise(crop: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """One digit's ink → (28,28): longer side 20 px keeping the aspect ratio, centre of mass on (14, 14)."""
    import cv2

    h, w = crop.shape
    side = max(h, w)
    if side > FIELD and mask is not None:  # shrunk from a bigger image: keep strokes MNIST-thick
        width = stroke_width(mask) * BOX / side
        if width < W_THIN:
            crop = _thicken(crop, width)
            h, w = crop.shape
            side = max(h, w)
    if side != BOX:
        size = (max(1, round(w * BOX / side)), max(1, round(h * BOX / side)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if side > BOX else cv2.INTER_LINEAR)
    crop = crop / max(float(crop.max()), 1e-6)
    return _centre(np.clip(crop, 0.0, 1.0))


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
    ink, sheet = _ink_and_sheet(to_grey(to_array(open_image(src))))
    digits = [] if ink is None else [normalise(crop, mask) for crop, mask in find_digits(ink, single, sheet)]
    return np.stack(digits) if digits else np.zeros((0, FIELD, FIELD), np.float32)
