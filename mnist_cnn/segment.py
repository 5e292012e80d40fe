"""Ink and digits in a photo or drawing: ``ink_map(grey)`` → ink bright on dark, ``find_digits(ink)`` → crops.

    PYTHONPATH=. python -c "import numpy as np; from mnist_cnn.segment import ink_map; print(ink_map(np.eye(40)).shape)"

The part of ``preprocess.to_mnist`` that separates writing from paper, and one digit from the next:

* the paper: where the border is all one level (a canvas, a rendered image), or half of it is at its
  brightest (darkest) level outside thumbnails, that level; else a robust quadratic fit of its brightness
  (ink is the minority) takes out uneven light; contrast is taken relative to the light at each place, so
  ink in shade counts as much as ink in the sun. In a thumbnail (under 64 px: a crop, a canvas, an
  MNIST-format image) the paper is a plane through the image's border instead, since its subject may fill
  most of the frame; where strokes cover much of that border (a digit scanned to fill its box), the paper is
  the side that looks least like strokes;
* polarity: ink is the side with more mass beyond 3σ of the paper (dark pen on paper, chalk, white on black);
* a sheet on a table: the convex hull of the largest background region, when what lies off it is not paper
  and the hull holds the writing whole;
* shadows and the table past the paper's edge (photos, not thumbnails): a morphological opening wider than 4
  strokes, subtracted where it reaches the image's or the sheet's border;
* a noise-aware ramp: below 3σ of pixel noise → 0, the typical ink level (Otsu) → 1;
* digits: connected components; specks (< 4 % of the ink) and frame lines along the border dropped (a digit
  the border cuts across one stroke is kept); pieces of one digit (broken strokes, a detached bar) merged;
  left to right.

The pixel operations (resampling, components, morphology, Otsu, contours) are in pixels.py.
"""

from __future__ import annotations

import numpy as np

from mnist_cnn import pixels

MIN_CONTRAST = 0.08  # ink must differ from the paper by this much (of full scale), else "no digit"
THUMBNAIL = 64  # px: a smaller image is a crop, a canvas or an MNIST-format digit, not a photo of a sheet
AMBIGUOUS_BORDER = 0.25  # a thumbnail's border this much ink (or more) no longer tells ink from paper (_paper_level)


def quantile(x: np.ndarray, q: float) -> float:
    """np.quantile(x, q) (linear interpolation), by partial sorting: the same value, several times faster on
    the small arrays of a thumbnail, where np.quantile's own overhead dominates (this runs on every request)."""
    x = np.asarray(x).ravel()
    pos = q * (x.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, x.size - 1)
    part = np.partition(x, [lo, hi])
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def _robust_fit(z: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares coefficients (basis[:, 0] is ones) refitted on the values within 3σ of the surface, starting
    from the median (the paper): ink and glare drop out, and the surface never bends to the ink."""
    coef, keep = np.zeros(basis.shape[1]), None
    coef[0] = quantile(z, 0.5)
    for _ in range(4):
        r = z - basis @ coef
        sigma = max(1.4826 * quantile(np.abs(r), 0.5), 2e-3)
        new_keep = np.abs(r) < 3 * sigma
        if new_keep.sum() < 12 or (keep is not None and (new_keep == keep).all()):
            break
        keep = new_keep
        a = basis[keep]
        coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(len(coef)), a.T @ z[keep])
    return coef


def _fit_paper(g: np.ndarray) -> np.ndarray:
    """The paper's brightness → (H,W) surface: the level of a border that is all one level (a canvas, a rendered
    image: the digit may cover most of the frame, or split its paper as a sheet on a table would) or, outside
    thumbnails, half of it at its brightest level (darkest on a dark canvas), as on a canvas that a large
    digit, or its blur, reaches in places: there the ink may be the majority, and a fit would bend to it. Else
    a robust quadratic over the image (ink is the minority) or, in a thumbnail, a robust plane through its
    border (see _fit_border)."""
    h, w = g.shape
    border = np.concatenate((g[0], g[-1], g[:, 0], g[:, -1]))
    if border.min() == border.max():
        return np.full((h, w), border[0], np.float32)
    if max(h, w) < THUMBNAIL:
        return _fit_border(g)
    level = border.max() if border.mean() > 0.5 else border.min()
    if (border == level).mean() >= 0.5:
        return np.full((h, w), level, np.float32)
    s = min(1.0, 48 / max(h, w))  # fit on a ≤ 48-px thumbnail: shading is smooth
    small = pixels.resize(g, (max(2, round(w * s)), max(2, round(h * s))), "area")
    yy, xx = np.mgrid[-1:1:small.shape[0] * 1j, -1:1:small.shape[1] * 1j]
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], -1).reshape(-1, 6)
    surface = (basis @ _robust_fit(small.ravel().astype(np.float64), basis)).reshape(small.shape)
    return pixels.resize(surface, (w, h), "linear")


def _fit_border(g: np.ndarray) -> np.ndarray:
    """A thumbnail's paper: a robust plane through its 1-px border (a stroke touching the edge is a minority
    there). A thumbnail is a crop, a canvas or an MNIST-format image, never a photo of a sheet, and its
    subject may fill most of the frame (a garment, a logo), so "ink is the minority" would not hold: fitted
    over the whole image, the paper would become the object and its background the ink."""
    h, w = g.shape
    ring = np.zeros((h, w), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    edge = g[ring]
    level = _paper_level(g, edge)
    if level is not None:  # strokes cover much of the border: no plane through it is the paper
        return np.full((h, w), level, np.float32)
    yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
    basis = np.stack([np.ones_like(xx), xx, yy], -1)
    return (basis @ _robust_fit(edge.astype(np.float64), basis[ring])).astype(np.float32)


def _paper_level(g: np.ndarray, edge: np.ndarray) -> float | None:
    """None, unless strokes cover a large part of the thumbnail's border (``edge``): then the paper's level,
    that of the side of the ink/paper threshold that looks least like pen strokes.

    A digit cropped tight, or scanned into a box it fills edge to edge (forms, Semeion), runs its strokes
    along the border, and a round 0 can cover most of it: the border's majority is then ink, and a plane
    through it would make the paper ink. There, the strokes are the side in fewer pieces (a digit is one or
    two strokes; the paper falls into its holes and the corners the strokes cut off) and, where the counts
    tie, the thinner side."""
    lo = float(g.min())
    if float(g.max()) - lo < MIN_CONTRAST:
        return None
    t = lo + _otsu(g - lo)
    dark_edge = float((edge <= t).mean())
    if min(dark_edge, 1 - dark_edge) < AMBIGUOUS_BORDER:
        return None
    dark = g <= t
    pieces_dark, pieces_light = pixels.label(dark)[0], pixels.label(~dark, connectivity=4)[0]
    if pieces_dark != pieces_light:
        ink_is_dark = pieces_dark < pieces_light
    else:
        ink_is_dark = stroke_width(dark) < stroke_width(~dark)
    return quantile(edge[edge > t] if ink_is_dark else edge[edge <= t], 0.5)


def _noise(g: np.ndarray) -> float:
    """Pixel noise σ from differences of neighbours along rows and along columns, the smaller of the two
    (robust: edges and shading are a minority in at least one direction, even in a tight crop of a "1", where
    nearly every difference along a row crosses an edge of the stroke)."""
    h, w = g.shape
    rows, cols = g[:: max(1, h // 256)], g[:, :: max(1, w // 256)]
    estimates = [1.4826 * quantile(np.abs(d), 0.5) / np.sqrt(2)
                 for d in (rows[:, 1:] - rows[:, :-1], cols[1:] - cols[:-1]) if d.size]
    return max(min(estimates), 2e-3) if estimates else 2e-3


def _otsu(values: np.ndarray) -> float:
    top = float(values.max())
    u8 = (values / top * 255).astype(np.uint8)  # values are in (0, top]: no clip needed
    return pixels.otsu(u8) / 255 * top


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: 2·area / contour length (exact for long bars, any width ≥ 1)."""
    return 2.0 * float(mask.sum()) / max(pixels.contour_length(mask), 1.0)


def _border_contact(labels: np.ndarray, n: int, sheet: np.ndarray | None = None) -> np.ndarray:
    """Per label, how many of its pixels lie on the image's border, or on the edge of the ``sheet`` mask."""
    edge = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    if sheet is not None:
        rim = pixels.dilate(~sheet, 5)
        edge = np.concatenate([edge, labels[rim]])
    return np.bincount(edge.ravel(), minlength=n)


def _inner_width(mask: np.ndarray, sheet: np.ndarray | None = None) -> float:
    """Stroke width of the ink away from the image's border (the table past a paper edge touches it)."""
    n, labels = pixels.label(mask)
    inner = np.flatnonzero(_border_contact(labels, n, sheet) == 0)[1:] if n > 1 else []
    return stroke_width(np.isin(labels, inner) if len(inner) else mask)


def _remove_broad(c: np.ndarray, width: float, level: float) -> np.ndarray:
    """Subtract what is broader than 4 strokes and reaches the image's border (the table past the paper edge,
    shadows): a morphological opening, kept only in its regions above ``level`` that touch the border."""
    k = 4 * width + 3
    h, w = c.shape
    f = max(1.0, k / 15, max(h, w) / 512)  # run it on ≤ 512 px, kernel ≤ 15 px: broad things stay broad there
    small = pixels.resize(c, (max(1, round(w / f)), max(1, round(h / f)))) if f > 1 else c
    kernel = pixels.ellipse(int(k / f) | 1)
    broad = pixels.opening(small, kernel)
    n, labels = pixels.label(broad > level)
    touching = np.flatnonzero(_border_contact(labels, n))
    region = pixels.dilate(np.isin(labels, touching[touching > 0]), kernel)
    if not region.any():
        return c
    broad = np.where(region, np.maximum(broad, 0.0), 0.0).astype(np.float32)
    if f > 1:
        broad = pixels.resize(broad, (w, h), "linear")
    return c - broad


def _on_the_paper(c: np.ndarray, level: float) -> np.ndarray | None:
    """The sheet in a photo: convex hull of the largest background region, at ≤ 256 px. None unless what lies
    off it is ≥ 10 % of the frame and mostly not background (a table), it holds a mark whole and its edge cuts
    none away from the image's border: scans, canvases, tight crops, big digits that split the background
    stay whole."""
    h, w = c.shape
    if max(h, w) < THUMBNAIL:  # a thumbnail, not a photo of a sheet
        return None
    f = min(1.0, 256 / max(h, w))
    paper = (c < level).astype(np.float32)
    if f < 1:
        paper = pixels.resize(paper, (max(1, round(w * f)), max(1, round(h * f))))
    paper = paper > 0.5
    k = int(0.035 * max(paper.shape)) | 1  # cut narrow bridges to the table: 9 px at 256
    n, labels = pixels.label(pixels.opening(paper, k), connectivity=4)
    if n < 2:
        return None
    sheet = 1 + int(np.argmax(np.bincount(labels.ravel(), minlength=n)[1:]))
    region = labels == sheet
    if pixels.row_spans(region) > 0.9 * region.size:  # the hull holds every row's span: < 10 % would lie off it
        return None
    hull = pixels.hull_mask(region)
    off = ~hull
    if off.mean() < 0.1 or paper[off].mean() > 0.4:  # what lies off the hull must be mostly not paper (a table)
        return None
    n, marks = pixels.label(~paper)  # the writing and the table
    inside, size = np.bincount(marks[hull], minlength=n), np.bincount(marks.ravel(), minlength=n)
    crossing = (_border_contact(marks, n) == 0) & (size >= 20) & (inside > 0.05 * size) & (inside < 0.95 * size)
    held = (size >= 20) & (inside >= 0.95 * size)
    if crossing[1:].any() or not held[1:].any():  # the sheet holds the writing whole, or it is no sheet
        return None
    hull = pixels.erode(hull, 7)  # off the sheet's blurred edge (~1 % of the frame)
    return pixels.resize(hull, (w, h), "nearest")


def ink_map(grey: np.ndarray) -> np.ndarray | None:
    """(H,W) grey → (H,W) ink in [0,1], bright on dark, paper 0; None when there is no ink (blank, uniform)."""
    return ink_and_sheet(grey)[0]


def ink_and_sheet(grey: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """ink_map, and the mask of the sheet when the photo shows one on a table (else None)."""
    paper = _fit_paper(grey)
    r = grey - paper
    sigma = _noise(grey)
    dark, light = np.maximum(-r - 3 * sigma, 0).sum(), np.maximum(r - 3 * sigma, 0).sum()
    # ink is the side with more outlying mass; contrast relative to the light there (paper in shade, same ink)
    scale = np.maximum(paper, 0.1) if dark > light else np.maximum(1.0 - paper, 0.1)
    c = (-r if dark > light else r) / scale
    sigma /= quantile(scale, 0.5)
    if sigma > 0.03:  # visible noise: a light blur keeps strokes and quietens single pixels
        c = pixels.gaussian_blur(c, 1.0)
        sigma *= 0.3  # what a σ=1 Gaussian leaves of white noise (1 / (2·√π) ≈ 0.28)
    if float(c.max()) < max(MIN_CONTRAST, 6 * sigma):
        return None, None
    t = max(_otsu(c[c > 3 * sigma]), 4 * sigma)
    sheet = _on_the_paper(c, 0.5 * t)
    if sheet is not None:  # a sheet on a table: what lies off the sheet is not writing
        c = np.where(sheet, c, 0.0)
    if max(grey.shape) >= THUMBNAIL:  # shadows and a table past the paper's edge are in photos, not thumbnails
        width = min(_inner_width(c > t, sheet), 0.2 * min(grey.shape))
        c = _remove_broad(c, width, 0.5 * t)
    above = c[c > 3 * sigma]
    if above.size == 0 or float(above.max()) < max(MIN_CONTRAST, 6 * sigma):
        return None, None
    t = max(_otsu(above), 4 * sigma)
    lo, hi = 3 * sigma, quantile(c[c > t], 0.6)  # MNIST: hi ≈ 0.99, so it stays as it is
    return np.clip((c - lo) / max(hi - lo, 1e-6), 0.0, 1.0), sheet


def _components(ink: np.ndarray, sheet: np.ndarray | None = None) -> tuple[np.ndarray, list, np.ndarray, list]:
    """Labels, boxes (x, y, w, h per label, plain ints), ink mass; ids of the components that are strokes (not
    specks nor frame lines). Plain ints, not numpy rows: numpy's per-element cost dominated this per-request
    bookkeeping of a handful of components."""
    n, labels = pixels.label(ink >= 0.25)
    box = pixels.boxes(labels, n).tolist()
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n)
    strong = np.bincount(labels[ink >= 0.5], minlength=n) > 0  # hysteresis: a stroke reaches full ink
    mass[0], strong[0] = 0.0, False
    if not strong.any():
        return labels, box, mass, []
    floor = 0.04 * mass[strong].max()
    ids = np.flatnonzero(strong & (mass >= floor)).tolist()  # specks out
    ids = sorted(ids, key=lambda i: -mass[i])[:40]  # a digit, or a number, is a few pieces
    contact = _border_contact(labels, n, sheet).tolist()
    inner = [i for i in ids if contact[i] == 0]
    if inner:  # a digit lies inside: what runs along the border, or outgrows every digit, is edge or frame…
        stray = 4 * sum(mass[i] for i in inner)  # …unless the border cuts it and what lies inside is stray marks
        inner += [i for i in ids if contact[i] and mass[i] > stray and _cut_by_border(labels, box[i], i, contact[i])]
        big_w, big_h = 1.5 * max(box[i][2] for i in inner), 1.5 * max(box[i][3] for i in inner)  # no digit's size
        ids = [i for i in ids if i in inner or contact[i] < 0.1 * min(ink.shape)
               and box[i][2] < big_w and box[i][3] < big_h]
    return labels, box, mass, ids


def _cut_by_border(labels: np.ndarray, box: list, i: int, contact: int) -> bool:
    """Component ``i`` is a digit that the image's edge cuts (a tight crop), not a frame, an edge line or a bar
    reaching in (a pen, a ruler): it meets the border along at most 1.5 of its own stroke widths, where a line
    along the border meets it along its length, and its ink spreads both ways (the minor axis of its pixels
    at least a quarter of the major one; a straight bar's is its width over its length). Asked only of
    components four times heavier than all the ink inside (stray marks beside it)."""
    x, y, w, h = box
    mask = labels[y:y + h, x:x + w] == i
    ys, xs = np.nonzero(mask)
    low, high = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    return contact <= 1.5 * stroke_width(mask) and low >= 0.25 ** 2 * high


def _same_digit(a: list, b: list) -> bool:
    """Two components' boxes (x, y, w, h) are pieces of one digit: they overlap in x by half the narrower one
    (a broken stroke), or they are close in x and either stacked (little vertical overlap) or one is much
    shorter than the other (a detached bar, as in many MNIST 5s). Digits of a number sit side by side."""
    ox = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    oy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    short, tall = sorted((a[3], b[3]))
    return bool(ox >= 0.5 * min(a[2], b[2]) or ox > -0.25 * tall and (oy < 0.25 * short or short < 0.4 * tall))


def _pieces(box: list, ids: list[int]) -> list[list[int]]:
    """Components → sets of pieces of one digit (``_same_digit``, transitively)."""
    root = {i: i for i in ids}

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    for n, i in enumerate(ids):
        for j in ids[n + 1:]:
            if _same_digit(box[i], box[j]):
                root[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in ids:
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _extent(box: list, group: list[int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box around a group of components."""
    return (min(box[i][0] for i in group), min(box[i][1] for i in group),
            max(box[i][0] + box[i][2] for i in group), max(box[i][1] + box[i][3] for i in group))


def _group(box: list, mass: np.ndarray, ids: list[int]) -> list[list[int]]:
    """Components → digits, left to right. A digit of a number reaches 3/4 of the tallest one's height in
    height or width, and holds ≥ 8 % of the heaviest one's ink (a thin "1" beside a bold "8" has ~10 %);
    smaller leftovers (a stray mark, a detached piece) join the digit beside them, or are dropped when far."""
    groups = _pieces(box, ids)
    if len(groups) == 1:
        return groups
    weight = [mass[m].sum() for m in groups]
    extent = [_extent(box, m) for m in groups]
    span = [(x0, x1) for x0, _, x1, _ in extent]
    height = [y1 - y0 for _, y0, _, y1 in extent]
    size = [max(h, x1 - x0) for h, (x0, x1) in zip(height, span)]
    digits = {g: list(m) for g, m in enumerate(groups) if weight[g] >= 0.08 * max(weight)
              and size[g] >= 0.75 * max(height)}
    for g, m in enumerate(groups):
        if g not in digits and digits:
            gap = {d: max(span[d][0] - span[g][1], span[g][0] - span[d][1]) for d in digits}
            near = min(gap, key=gap.get)
            if gap[near] <= 0.5 * (span[near][1] - span[near][0]):
                digits[near] += m
    return [digits[g] for g in sorted(digits, key=lambda g: span[g][0])]


def find_digits(ink: np.ndarray, single: bool = False,
                sheet: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crop of the ink, its stroke mask) for each digit, left to right; one for everything when ``single``."""
    labels, box, mass, ids = _components(ink, sheet)
    if not ids:
        return []
    out = []
    for group in ([ids] if single else _group(box, mass, ids)):
        member = np.zeros(len(box), bool)  # a lookup table: np.isin sorts, and this runs per request
        member[group] = True
        x0, y0, x1, y1 = _extent(box, group)
        x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, ink.shape[1]), min(y1 + 1, ink.shape[0])
        core = member[labels[y0:y1, x0:x1]]
        near = pixels.dilate(core, 3)  # keep the anti-aliased rim
        crop = np.where(near, ink[y0:y1, x0:x1], 0.0).astype(np.float32)
        rows, cols = np.nonzero(crop)
        crop = crop[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        out.append((crop, core[rows.min():rows.max() + 1, cols.min():cols.max() + 1]))
    return out
