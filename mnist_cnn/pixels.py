"""The few pixel operations preprocessing needs, on numpy arrays: resampling (Pillow), connected components
(cc3d), Otsu's threshold, morphology with square or elliptic kernels, a Gaussian blur, a convex hull's mask,
contour length and the Euclidean distance transform.

    PYTHONPATH=. python -c "import numpy as np; from mnist_cnn.pixels import dilate; print(dilate(np.eye(5), 3))"

Kept small on purpose: OpenCV would bring all of these in one call each, but it alone is over half of the
reading install's size budget (bench/RESULTS.md, "Reading install"); Pillow is already there to decode
images, and cc3d (connected components in C++) is small.
Kernels are odd-sized and symmetric, as OpenCV's ``getStructuringElement`` makes them, so that the thresholds
tuned with OpenCV keep their meaning; borders are ignored by dilation and erosion (OpenCV's default).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

_RESAMPLE = {"area": Image.Resampling.BOX, "linear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


def resize(a: np.ndarray, size: tuple[int, int], how: str = "area") -> np.ndarray:
    """(H,W) → ``size`` = (width, height): "area" averages (shrinking), "linear" interpolates (enlarging),
    "nearest" copies (masks). Float arrays come back float32, uint8 and bool ones as they went in."""
    kind = a.dtype
    img = Image.fromarray(a.astype(np.uint8) if kind == bool else
                          a if kind == np.uint8 else np.ascontiguousarray(a, np.float32))
    out = np.asarray(img.resize(size, _RESAMPLE[how]))
    return out.astype(bool) if kind == bool else out


def label(mask: np.ndarray, connectivity: int = 8) -> tuple[int, np.ndarray]:
    """Connected components of ``mask`` → (n, labels): components 1…n-1, 0 the background."""
    import cc3d

    # uint8, not bool: cc3d 4.1's binary-image path (bool input implies it) mislabels some 8-connected images
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask, np.uint8), connectivity=connectivity,
                                          return_N=True, out_dtype=np.uint32)
    return n + 1, labels


def boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) int: x, y, width, height of the bounding box of each label 1…n-1 (row 0, the background: zeros)."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")
    lab, ys, xs = lab[order], ys[order], xs[order]
    out = np.zeros((n, 4), np.int64)
    if lab.size:
        starts = np.flatnonzero(np.concatenate(([True], lab[1:] != lab[:-1])))
        x0, y0 = np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts)
        x1, y1 = np.maximum.reduceat(xs, starts), np.maximum.reduceat(ys, starts)
        out[lab[starts]] = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1)
    return out


def otsu(u8: np.ndarray) -> int:
    """Otsu's threshold of 8-bit values: the level t that best splits them into ≤ t and > t (the between-class
    variance, times n², compared in integers: no division by an empty class)."""
    hist = np.bincount(u8.ravel(), minlength=256)[:256]
    count, moment = np.cumsum(hist), np.cumsum(hist * np.arange(256))
    n, total = int(count[-1]), int(moment[-1])
    split = (count > 0) & (count < n)
    between = np.zeros(256)
    between[split] = ((total * count[split] - n * moment[split]).astype(np.float64) ** 2
                      / (count[split] * (n - count[split])))
    return int(np.argmax(between))


def ellipse(size: int) -> list[int]:
    """Half-widths, row by row, of OpenCV's elliptic kernel of odd ``size`` (a disc drawn on the pixel grid)."""
    r = size // 2
    return [int(np.rint(r * np.sqrt((r * r - dy * dy) / (r * r)))) if r else 0 for dy in range(-r, r + 1)]


def _widen(run: np.ndarray, steps: int, pick, axis: int) -> None:
    """In place: each value becomes the extreme over ±``steps`` along ``axis`` (-1: rows, -2: columns; the
    outer ``steps`` go stale)."""
    r = run if axis == -1 else run.swapaxes(-1, -2)
    for _ in range(steps):
        mid = pick(r[..., :-2], r[..., 1:-1])
        r[..., 1:-1] = pick(mid, r[..., 2:], out=mid)


def _sweep(a: np.ndarray, kernel: int | list[int], pick, pad) -> np.ndarray:
    """max (dilation) or min (erosion) over the last two axes of ``a`` (one image or a batch), with a symmetric
    kernel: a square's side, or half-widths per row (``ellipse``)."""
    rows = [kernel // 2] * kernel if isinstance(kernel, int) else kernel
    r, c = len(rows) // 2, max(rows)
    h, w = a.shape[-2:]
    run = np.full((*a.shape[:-2], h + 2 * r, w + 2 * c), pad, a.dtype)  # the extreme over [x - width, x + width]
    run[..., r:r + h, c:c + w] = a
    if len(set(rows)) == 1:  # a rectangle: separable
        _widen(run, c, pick, -1)
        _widen(run, r, pick, -2)
        return run[..., r:r + h, c:c + w].copy()
    out, width = None, 0
    for half in sorted(set(rows)):
        _widen(run, half - width, pick, -1)
        width = half
        for dy in (i for i, hw in enumerate(rows) if hw == half):
            part = run[..., dy:dy + h, c:c + w]
            out = part.copy() if out is None else pick(out, part, out=out)
    return out


def _extreme(dtype, high: bool):
    """The value padding adds that never wins: the type's top for erosion, its bottom for dilation."""
    if dtype == bool:
        return high
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    return info.max if high else info.min


def dilate(a: np.ndarray, kernel: int | list[int]) -> np.ndarray:
    """Grey (or binary) dilation of an image or a batch; ``kernel``: a square's side, or half-widths per row
    (``ellipse``). Past the border counts as nothing (OpenCV's default)."""
    return _sweep(a, kernel, np.maximum, _extreme(a.dtype, False))


def erode(a: np.ndarray, kernel: int | list[int]) -> np.ndarray:
    """Erosion, as ``dilate``; past the border counts as everything (a mask is not eroded from the frame)."""
    return _sweep(a, kernel, np.minimum, _extreme(a.dtype, True))


def opening(a: np.ndarray, kernel: int | list[int]) -> np.ndarray:
    """Erosion then dilation: what is narrower than the kernel goes, the rest keeps its shape."""
    return dilate(erode(a, kernel), kernel)


def gaussian_blur(a: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Separable Gaussian over ±4σ, mirrored borders (OpenCV's kernel size and border for float images)."""
    half = int(np.rint(4 * sigma))
    g = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    g = (g / g.sum()).astype(np.float32)
    out = np.asarray(a, np.float32)
    for _ in range(2):  # along columns, then (transposed) along rows
        p, n = np.pad(out, ((half, half), (0, 0)), mode="reflect"), out.shape[0]
        acc = g[0] * p[:n]
        for i in range(1, len(g)):
            acc += g[i] * p[i:i + n]
        out = acc.T
    return np.ascontiguousarray(out)


def _row_ends(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows holding any of ``mask``, and in each its first and last column."""
    ys = np.flatnonzero(mask.any(1))
    return ys, mask[ys].argmax(1), mask.shape[1] - 1 - mask[ys, ::-1].argmax(1)


def row_spans(mask: np.ndarray) -> int:
    """Pixels from the first to the last of ``mask`` in each row, summed (a lower bound of its hull's area)."""
    _, first, last = _row_ends(mask)
    return int((last - first + 1).sum())


def hull_mask(mask: np.ndarray) -> np.ndarray:
    """Mask of the convex hull of ``mask``'s pixels (their centres); all False when ``mask`` is empty."""
    ys, first, last = _row_ends(mask)
    if not ys.size:
        return np.zeros(mask.shape, bool)
    pts = np.unique(np.concatenate([np.stack([first, ys], 1), np.stack([last, ys], 1)]), axis=0)  # by x, then y
    img = Image.new("L", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(img).polygon(_monotone_chain(pts[:, 0].tolist(), pts[:, 1].tolist()), fill=1, outline=1)
    return np.asarray(img, bool)


def _monotone_chain(xs: list[int], ys: list[int]) -> list[tuple[int, int]]:
    """Andrew's convex hull of points sorted by x then y; a point or a segment comes back as a polygon."""
    if len(xs) < 3:
        return [(xs[0], ys[0]), (xs[-1], ys[-1]), (xs[0], ys[0])]

    def half(order):
        hx: list[int] = []
        hy: list[int] = []
        for i in order:
            x, y = xs[i], ys[i]
            while len(hx) >= 2 and (hx[-1] - hx[-2]) * (y - hy[-2]) - (hy[-1] - hy[-2]) * (x - hx[-2]) <= 0:
                hx.pop()
                hy.pop()
            hx.append(x)
            hy.append(y)
        return list(zip(hx, hy))

    lower, upper = half(range(len(xs))), half(range(len(xs) - 1, -1, -1))
    return lower[:-1] + upper[:-1]


# The ring of 8 neighbours, clockwise from the top (rows grow downwards), and the length of a step to each.
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _step_lengths() -> np.ndarray:
    """For each of the 256 patterns of ink in the ring: the length the contour walks leaving this pixel. A
    border tracer (OpenCV's) passes a pixel once for each gap of paper in its ring that touches it by an edge
    (a gap of one diagonal pixel is not a border: the ink connects across it), and leaves it for the first ink
    pixel clockwise after that gap: a step of 1 along a row or column, √2 on a diagonal."""
    table = np.zeros(256)
    for pattern in range(1, 255):
        ink = [(pattern >> k) & 1 for k in range(8)]
        start = ink.index(1)  # walk the ring from an ink pixel: each gap then ends before the walk does
        gap, edge = False, False
        for k in range(start + 1, start + 9):
            if not ink[k % 8]:
                gap, edge = True, edge or k % 2 == 0
            elif gap:
                table[pattern] += (np.sqrt(2) if k % 2 else 1.0) if edge else 0.0
                gap, edge = False, False
    return table


_STEP = _step_lengths()


def contour_length(mask: np.ndarray) -> float:
    """Total length of ``mask``'s contours, outer and inner, through the centres of its border pixels, as
    OpenCV's ``arcLength`` measures what ``findContours`` traces: a sum over the pixels, each by its ring."""
    rows, cols = np.flatnonzero(np.any(mask, 1)), np.flatnonzero(np.any(mask, 0))
    if not rows.size:
        return 0.0
    m = np.pad(np.asarray(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], bool), 1)
    h, w = m.shape[0] - 2, m.shape[1] - 2
    code = np.zeros((h, w), np.uint8)
    for k, (dy, dx) in enumerate(_RING):
        code |= m[1 + dy:1 + dy + h, 1 + dx:1 + dx + w].astype(np.uint8) << k
    return float(_STEP[code[m[1:-1, 1:-1]]].sum())


def distance_inside(masks: np.ndarray) -> np.ndarray:
    """(N,H,W) bool → (N,H,W) float32: each pixel's Euclidean distance to the nearest pixel outside its mask
    (0 off the mask; inf when a mask has no pixel outside it, as OpenCV's ``distanceTransform``). Exact, in
    two passes done by brute force (images here are 28×28): the distance along each row, then the smallest
    row distance² + dy² down each column (the separable method of Felzenszwalb and Huttenlocher)."""
    masks = np.asarray(masks, bool)
    n, h, w = masks.shape
    dx = np.abs(np.arange(w)[:, None] - np.arange(w)[None, :]).astype(np.float32)  # (x, x')
    dy2 = ((np.arange(h)[:, None] - np.arange(h)[None, :]) ** 2).astype(np.float32)[None, :, :, None]
    out = np.empty((n, h, w), np.float32)
    for i in range(0, n, 128):
        outside = ~masks[i:i + 128, :, None, :]  # (k, y, 1, x')
        row = np.where(outside, dx, np.float32(np.inf)).min(-1)  # (k, y, x): along the row
        out[i:i + 128] = np.sqrt((row[:, None] ** 2 + dy2).min(2))  # over the rows y' of each column
    return out
