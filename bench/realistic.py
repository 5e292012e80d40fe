"""A user-like evaluation set built from MNIST *test* digits (never the training images).

    PYTHONPATH=. python bench/realistic.py [--per-style 200] [--out DIR]   # writes the images + manifest.json

Each style renders MNIST test digits the way people hand them to a digit reader: drawings on a canvas
(black on white, white on black, transparent PNG exports), phone photos (coloured ink and paper, uneven light
and shadows, paper on a table, rotated by EXIF), small or large and off centre in a big frame, thick marker
and thin pen strokes, blur, JPEG artefacts, noise, and numbers of 2-4 digits. Everything is drawn from one
seed, so the same set comes back on every machine; ``bench_realistic.py`` imports ``build``.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mnist_cnn.data import load_mnist

VERSION = 2  # bump when a style's drawing changes: cached sets are rebuilt
STYLES = ["black_on_white", "white_on_black", "colour_ink_paper", "small_off_centre", "large_off_centre",
          "thick_marker", "thin_pen", "blur", "jpeg", "noise", "shading", "transparent_png", "exif_rotated",
          "paper_photo", "multi_digit"]
PAPERS = [(0.98, 0.95, 0.70), (0.80, 0.90, 0.98), (0.98, 0.82, 0.86), (0.82, 0.95, 0.80), (0.92, 0.87, 0.76),
          (0.75, 0.75, 0.75)]
INKS = [(0.05, 0.15, 0.65), (0.75, 0.05, 0.05), (0.05, 0.45, 0.10), (0.40, 0.05, 0.55), (0.10, 0.10, 0.10),
        (0.35, 0.20, 0.05)]
INVERSE_EXIF = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning (vectorised): the pen's centre line of a filled stroke mask."""
    m = np.pad(mask.astype(bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = [np.roll(np.roll(m, -dy, 0), -dx, 1) for dy, dx in
                 ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))]  # P2..P9
            b = sum(q.astype(np.uint8) for q in p)
            a = sum((~p[i] & p[(i + 1) % 8]).astype(np.uint8) for i in range(8))
            c1 = ~(p[0] & p[2] & p[4]) if step == 0 else ~(p[0] & p[2] & p[6])
            c2 = ~(p[2] & p[4] & p[6]) if step == 0 else ~(p[0] & p[4] & p[6])
            drop = m & (b >= 2) & (b <= 6) & (a == 1) & c1 & c2
            changed |= bool(drop.any())
            m &= ~drop
        if not changed:
            return m[1:-1, 1:-1]


def pen(digit: np.ndarray, height: int, kind: str = "natural", width: float = 2.0) -> np.ndarray:
    """An MNIST digit (28×28 uint8) redrawn ``height`` px tall as anti-aliased ink coverage in [0,1]."""
    rows, cols = np.nonzero(digit)
    box = np.pad(digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1].astype(np.float32) / 255, 2)
    s = height / (box.shape[0] - 4)
    big = cv2.resize(box, (max(1, round(box.shape[1] * s)), max(1, round(box.shape[0] * s))),
                     interpolation=cv2.INTER_CUBIC)
    mask = cv2.GaussianBlur(big, (0, 0), max(0.5, s / 2)) > 0.3  # keeps MNIST's faint thin strokes
    if kind == "thick":
        r = max(1, round(0.05 * height))
        mask = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0
    elif kind == "thin":
        line = skeleton(mask).astype(np.uint8)
        r = max(0, round((width - 1) / 2))
        mask = cv2.dilate(line, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)


def place(canvas_hw: tuple[int, int], shape: np.ndarray, rng: np.random.Generator, margin: float = 0.05,
          centre: bool = False) -> np.ndarray:
    """Put ``shape`` in an empty (H,W) coverage map: centred ± a little, or anywhere inside a margin."""
    h, w = canvas_hw
    out = np.zeros((h, w), np.float32)
    sh, sw = min(shape.shape[0], h), min(shape.shape[1], w)
    my, mx = int(margin * h), int(margin * w)
    if centre:
        top = (h - sh) // 2 + int(rng.integers(-h // 20, h // 20 + 1))
        left = (w - sw) // 2 + int(rng.integers(-w // 20, w // 20 + 1))
    else:
        top, left = int(rng.integers(my, max(my + 1, h - sh - my))), int(rng.integers(mx, max(mx + 1, w - sw - mx)))
    top, left = int(np.clip(top, 0, h - sh)), int(np.clip(left, 0, w - sw))
    out[top:top + sh, left:left + sw] = shape[:sh, :sw]
    return out


def paint(cov: np.ndarray, paper, ink) -> np.ndarray:
    """Coverage map → (H,W,3) RGB: ink over paper (colours are RGB triples in [0,1] or (H,W,3) maps)."""
    a = cov[..., None]
    return np.asarray(paper, np.float32) * (1 - a) + np.asarray(ink, np.float32) * a


def encode(rgb: np.ndarray, fmt: str = "PNG", quality: int = 90, mode: str = "RGB", exif: int = 0) -> bytes:
    arr = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr if mode != "L" else arr.mean(axis=2).astype(np.uint8), mode)
    kw = {"quality": quality} if fmt == "JPEG" else {}
    if exif:
        img = img.transpose(INVERSE_EXIF[exif])
        tags = Image.Exif()
        tags[0x0112] = exif
        kw["exif"] = tags.tobytes()
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def lighting(h: int, w: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    """(H,W,1) illumination: a gradient in a random direction times a soft shadow blob."""
    yy, xx = np.mgrid[0:1:h * 1j, 0:1:w * 1j]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) + 0.5
    light = 1 - strength * ramp
    cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.2, 0.5)
    shadow = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return (light * (1 - 0.4 * strength * shadow)).astype(np.float32)[..., None]


def _canvas(rng, lo: int, hi: int, aspect: float = 1.0) -> tuple[int, int]:
    h = int(rng.integers(lo, hi))
    return h, int(h * aspect)


def _photo(rng, cov: np.ndarray, paper, ink, light: float, noise: float) -> np.ndarray:
    rgb = paint(cov, paper, ink) * lighting(*cov.shape, rng, light)
    return rgb + rng.normal(0, noise, rgb.shape).astype(np.float32)


def _paper_photo(d: np.ndarray, rng) -> np.ndarray:
    """A sheet (rotated, one or two edges in view) on a table; the digit on the sheet."""
    h, w = 600, 800
    table = [(0.35, 0.22, 0.12), (0.28, 0.28, 0.30), (0.55, 0.45, 0.35)][int(rng.integers(3))]
    cx, cy = w / 2 + rng.uniform(-120, 120), h / 2 + rng.uniform(-80, 80)
    rect = ((cx, cy), (rng.uniform(620, 900), rng.uniform(500, 800)), rng.uniform(-12, 12))
    sheet = cv2.fillPoly(np.zeros((h, w), np.uint8), [cv2.boxPoints(rect).astype(np.int32)], 1).astype(np.float32)
    sheet = cv2.GaussianBlur(sheet, (0, 0), 1.5)[..., None]
    background = paint(sheet[..., 0], table, (0.93, 0.92, 0.88))
    shape = pen(d, int(rng.uniform(0.3, 0.45) * h))
    top, left = int(cy - shape.shape[0] / 2 + rng.uniform(-30, 30)), int(cx - shape.shape[1] / 2 + rng.uniform(-40, 40))
    cov = np.zeros((h, w), np.float32)
    top, left = int(np.clip(top, 0, h - shape.shape[0])), int(np.clip(left, 0, w - shape.shape[1]))
    cov[top:top + shape.shape[0], left:left + shape.shape[1]] = shape
    ink = INKS[int(rng.choice([0, 4]))]
    rgb = paint(cov, background, ink) * lighting(h, w, rng, 0.35)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 1.0)
    return rgb + rng.normal(0, 0.02, rgb.shape).astype(np.float32)


def _number(digits: list[np.ndarray], rng) -> np.ndarray:
    """2-4 digits side by side, same pen size, uneven gaps and baselines."""
    height = int(rng.integers(80, 160))
    shapes = [pen(d, int(height * rng.uniform(0.9, 1.1))) for d in digits]
    gaps = [int(height * rng.uniform(0.12, 0.45)) for _ in shapes]
    w = sum(s.shape[1] for s in shapes) + sum(gaps) + height
    h = int(height * 1.8)
    cov, x = np.zeros((h, w), np.float32), height // 2
    for s, g in zip(shapes, gaps):
        top = int(np.clip((h - s.shape[0]) // 2 + rng.integers(-height // 10, height // 10 + 1), 0, h - s.shape[0]))
        cov[top:top + s.shape[0], x:x + s.shape[1]] = np.maximum(cov[top:top + s.shape[0], x:x + s.shape[1]], s)
        x += s.shape[1] + g
    return cov


def render(style: str, digits: list[np.ndarray], rng: np.random.Generator) -> tuple[bytes, str]:
    """One image of ``style`` showing ``digits`` (MNIST 28×28 uint8): (encoded bytes, file extension)."""
    d, white, black = digits[0], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
    if style == "black_on_white":
        n = _canvas(rng, 200, 600)
        return encode(paint(place(n, pen(d, int(n[0] * rng.uniform(0.5, 0.8))), rng, centre=True), white, black),
                      mode="L"), "png"
    if style == "white_on_black":
        n = _canvas(rng, 280, 560)
        return encode(paint(place(n, pen(d, int(n[0] * rng.uniform(0.5, 0.8))), rng, centre=True), black, white)), "png"
    if style == "colour_ink_paper":
        n = _canvas(rng, 360, 600, 4 / 3)
        cov = place(n, pen(d, int(n[0] * rng.uniform(0.4, 0.7))), rng, margin=0.1)
        if rng.random() < 0.2:  # chalk on a blackboard
            paper, ink = (0.12, 0.25, 0.16), (0.92, 0.92, 0.85)
        else:
            paper, ink = PAPERS[int(rng.integers(len(PAPERS)))], INKS[int(rng.integers(len(INKS)))]
        return encode(_photo(rng, cov, paper, ink, 0.2, 0.015), "JPEG", 85), "jpg"
    if style == "small_off_centre":
        n = _canvas(rng, 480, 800, 4 / 3)
        cov = place(n, pen(d, int(n[0] * rng.uniform(0.08, 0.15))), rng, margin=0.02)
        return encode(paint(cov, (0.96, 0.96, 0.96), (0.1, 0.1, 0.1)), mode="L"), "png"
    if style == "large_off_centre":
        n = _canvas(rng, 300, 500, rng.uniform(1.0, 1.6))
        cov = place(n, pen(d, int(n[0] * rng.uniform(0.85, 0.95))), rng, margin=0.01)
        return encode(paint(cov, white, black), mode="L"), "png"
    if style == "thick_marker":
        n = _canvas(rng, 300, 500)
        cov = place(n, pen(d, int(n[0] * rng.uniform(0.55, 0.75)), "thick"), rng, centre=True)
        return encode(paint(cov, white, INKS[int(rng.choice([0, 4]))])), "png"
    if style == "thin_pen":
        n = _canvas(rng, 800, 1200, 4 / 3)
        shape = pen(d, int(n[0] * rng.uniform(0.35, 0.6)), "thin", rng.uniform(1, 3))
        return encode(_photo(rng, place(n, shape, rng, margin=0.1), (0.95, 0.95, 0.93), INKS[0], 0.1, 0.01),
                      "JPEG", 92), "jpg"
    if style == "blur":
        n = _canvas(rng, 300, 500)
        height = int(n[0] * rng.uniform(0.5, 0.8))
        cov = cv2.GaussianBlur(place(n, pen(d, height), rng, centre=True), (0, 0), height * rng.uniform(0.03, 0.06))
        return encode(paint(cov, white, black), mode="L"), "png"
    if style == "jpeg":
        n = _canvas(rng, 100, 240)
        paper, ink = (white, black) if rng.random() < 0.5 else (black, white)
        return encode(paint(place(n, pen(d, int(n[0] * rng.uniform(0.6, 0.8))), rng, centre=True), paper, ink),
                      "JPEG", int(rng.integers(5, 21))), "jpg"
    if style == "noise":
        n = _canvas(rng, 200, 400)
        rgb = paint(place(n, pen(d, int(n[0] * rng.uniform(0.5, 0.8))), rng, centre=True), (0.9,) * 3, (0.1,) * 3)
        rgb = rgb + rng.normal(0, rng.uniform(0.08, 0.18), rgb.shape[:2])[..., None].astype(np.float32)
        specks = rng.random(rgb.shape[:2]) < 0.01
        rgb[specks] = rng.choice([0.0, 1.0], size=(int(specks.sum()), 1))
        return encode(rgb, mode="L"), "png"
    if style == "shading":
        n = _canvas(rng, 480, 640, 4 / 3)
        cov = place(n, pen(d, int(n[0] * rng.uniform(0.4, 0.7))), rng, margin=0.1)
        return encode(_photo(rng, cov, (0.92, 0.92, 0.9), (0.12, 0.12, 0.15), rng.uniform(0.5, 0.7), 0.015),
                      "JPEG", 90), "jpg"
    if style == "transparent_png":
        n = _canvas(rng, 280, 560)
        cov = place(n, pen(d, int(n[0] * rng.uniform(0.5, 0.8))), rng, centre=True)
        colour = [black, white, INKS[0], INKS[1]][int(rng.integers(4))]
        rgba = np.dstack([paint(cov, black, colour), cov])  # transparent pixels are (0,0,0,0), as canvases save
        return encode(rgba, mode="RGBA"), "png"
    if style == "exif_rotated":
        n = _canvas(rng, 480, 640, 4 / 3)
        cov = place(n, pen(d, int(n[0] * rng.uniform(0.4, 0.7))), rng, margin=0.1)
        rgb = _photo(rng, cov, (0.95, 0.94, 0.9), INKS[int(rng.choice([0, 4]))], 0.2, 0.01)
        return encode(rgb, "JPEG", 90, exif=int(rng.choice([3, 6, 8]))), "jpg"
    if style == "paper_photo":
        return encode(_paper_photo(d, rng), "JPEG", 85), "jpg"
    if style == "multi_digit":
        cov = _number(digits, rng)
        fmt = "JPEG" if rng.random() < 0.5 else "PNG"
        return encode(paint(cov, (0.97, 0.97, 0.95), INKS[int(rng.choice([0, 4]))]), fmt, 90), fmt.lower().replace("jpeg", "jpg")
    raise ValueError(f"unknown style {style!r}")


def build(per_style: int = 200, seed: int = 0) -> list[dict]:
    """Items {style, label, data, ext, indices}: ``per_style`` images per style, each from unused test digits."""
    images, labels = load_mnist("test")
    order = np.random.default_rng(seed).permutation(len(images))
    tail = (len(STYLES) - 1) * per_style  # numbers take the digits after the single-digit styles'
    items = []
    for s, style in enumerate(STYLES):
        rng = np.random.default_rng([seed, s])
        for i in range(per_style):
            if style == "multi_digit":
                k = int(rng.integers(2, 5))
                idx, tail = order[tail:tail + k], tail + k
            else:
                idx = order[s * per_style + i:s * per_style + i + 1]
            if len(idx) == 0:
                raise ValueError(f"per_style={per_style} needs more than the 10,000 MNIST test digits")
            data, ext = render(style, [images[j] for j in idx], rng)
            items.append({"style": style, "label": "".join(str(int(labels[j])) for j in idx), "data": data,
                          "ext": ext, "indices": [int(j) for j in idx]})
    return items


def write(items: list[dict], out: Path, meta: dict) -> None:
    """Write the images as out/<style>/<n>_<label>.<ext> and a manifest.json listing them."""
    rows = []
    for n, item in enumerate(items):
        path = out / item["style"] / f"{n:05d}_{item['label']}.{item['ext']}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item["data"])
        rows.append({"file": str(path.relative_to(out)), "style": item["style"], "label": item["label"],
                     "mnist_test_indices": item["indices"]})
    (out / "manifest.json").write_text(json.dumps({**meta, "items": rows}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-style", type=int, default=200, help="images per style (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole set (default: 0)")
    p.add_argument("--out", default="bench/results/realistic", help="folder (default: bench/results/realistic)")
    args = p.parse_args()
    items = build(args.per_style, args.seed)
    write(items, Path(args.out), {"per_style": args.per_style, "seed": args.seed})
    print(f"{len(items)} images in {args.out}")


if __name__ == "__main__":
    main()
