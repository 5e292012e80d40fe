"""preprocess.to_mnist on synthetic inputs with known answers, MNIST itself, and every kind of bad input.

    PYTHONPATH=. python -m pytest -q tests/test_preprocess.py
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from mnist_cnn import MnistCnnError
from mnist_cnn.data import load_mnist
from mnist_cnn.calibrate import is_filled
from mnist_cnn.preprocess import BOX, W_BOLD, WORK_SIDE, normalise, open_image, stroke_width, to_mnist

from conftest import ROOT, SAMPLES


def encode(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    """float [0,1] or uint8 array → encoded image bytes."""
    if a.dtype != np.uint8:
        a = np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt, **kw)
    return buf.getvalue()


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[: x.shape[0], : x.shape[1]]
    return float((x * ys).sum() / x.sum()), float((x * xs).sum() / x.sum())


def ink_box(x: np.ndarray, level: float = 0.0) -> tuple[int, int]:
    """(height, width) of the box around pixels brighter than ``level``."""
    rows, cols = np.nonzero(x > level)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test", limit=3000)


def upscale(digit: np.ndarray, factor: int) -> np.ndarray:
    """A 28×28 uint8 MNIST digit drawn ``factor`` times bigger, ink in [0,1] (bright)."""
    return cv2.resize(digit.astype(np.float32) / 255, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC).clip(0, 1)


# ------------------------------------------------------------------ MNIST's own convention
def test_mnist_convention_centre_14_and_box_20(mnist_test):
    """The constants we copy: MNIST puts the centre of mass within 0.5 px of pixel (14, 14), not 13.5, and
    fits the ink's longer side to 20 px."""
    images = mnist_test[0][:1000].astype(np.float32)
    coms = np.array([centre_of_mass(x) for x in images])
    assert np.abs(coms - 14.0).max() <= 0.5 + 1e-6
    assert abs(coms.mean() - 14.0) < 0.05  # 13.5 would be off by half a pixel on average
    assert np.mean([max(ink_box(x)) == 20 for x in images]) > 0.99


# ------------------------------------------------------------------ geometry on synthetic shapes
def test_polarity_detected_both_ways():
    ink = np.zeros((240, 180), np.float32)
    cv2.ellipse(ink, (90, 120), (50, 80), 0, 0, 360, 1.0, 14, cv2.LINE_AA)
    cv2.line(ink, (40, 40), (140, 200), 1.0, 14, cv2.LINE_AA)
    outs = [to_mnist(encode(1 - ink)), to_mnist(encode(ink)),  # black on white, white on black
            to_mnist(encode(0.65 - 0.5 * ink)), to_mnist(encode(0.2 + 0.6 * ink))]  # on grey papers
    for out in outs:
        assert out.shape == (1, 28, 28) and out.dtype == np.float32
        assert out[0, :3].max() == 0 and out[0].max() == pytest.approx(1.0)  # ink bright, background dark
        assert np.abs(out[0] - outs[0][0]).max() < 0.1


@pytest.mark.parametrize("paper, ink", [(0, 255), (255, 0), (40, 200)])
def test_a_thumbnail_filled_by_its_subject_keeps_its_subject(paper, ink):
    """In a 28×28 image a subject may cover most of the frame (a garment, a logo): the paper is what lies along
    the border, so the subject stays the ink, whole and filled, instead of its background becoming ink."""
    img = np.full((28, 28), paper, np.uint8)
    shirt = np.array([(3, 4), (10, 1), (17, 1), (24, 4), (27, 10), (22, 11), (21, 27), (6, 27), (5, 11), (0, 10)])
    cv2.fillPoly(img, [shirt], int(ink), cv2.LINE_AA)  # a T-shirt touching three edges, ~60 % of the frame
    out = to_mnist(encode(img.astype(np.float32) / 255))
    assert out.shape == (1, 28, 28)
    assert (out[0] > 0.5).sum() > 250  # filled, not an outline (an MNIST digit has ~100 ink pixels)
    assert is_filled(out).all()


@pytest.mark.parametrize("black_on_white", [True, False])
def test_a_digit_that_fills_its_box_keeps_its_polarity(black_on_white):
    """A 0 stretched to fill a 16×16 box (forms, Semeion) covers about half of the border with ink: the border
    no longer says which side is the paper, and the strokes still end up as the ink, not the paper inside."""
    img = np.zeros((16, 16), np.uint8)
    cv2.ellipse(img, (8, 8), (7, 8), 0, 0, 360, 255, 2)  # a ring touching all four edges
    ring = img > 127
    edge = np.concatenate((ring[0], ring[-1], ring[:, 0], ring[:, -1]))
    assert 0.25 <= edge.mean() <= 0.75  # the case in point: the border is not mostly paper
    out = to_mnist(encode(255 - img if black_on_white else img))
    assert out.shape == (1, 28, 28)
    assert out[0, 14, 14] == 0 and out[0, :, 14].max() > 0.9  # the hole is paper, the ring is ink
    assert not is_filled(out).any()


def test_tightly_cropped_digits_are_found_and_read_like_the_originals(trained_run, mnist_test):
    """A digit cropped to its ink (a "1" is then 4-6 px wide and touches all four edges) is still one digit, read
    as the same digit with a margin around it is (the noise estimate used to take a thin stroke's edges for noise,
    and found no ink in 17 % of such crops)."""
    from mnist_cnn.predict import Predictor

    predictor = Predictor.from_checkpoint(trained_run)
    tight_reads, loose_reads = [], []
    for a in mnist_test[0][:500]:
        rows, cols = np.nonzero(a > 30)
        tight = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        tight_reads.append(predictor.predict_image(encode(255 - tight)).digits)
        loose_reads.append(predictor.predict_image(encode(255 - np.pad(tight, 3))).digits)
    assert all(len(d) == 1 for d in tight_reads)
    assert np.mean([t == l for t, l in zip(tight_reads, loose_reads)]) >= 0.99


@pytest.mark.parametrize("h, w", [(300, 100), (60, 240), (400, 400), (12, 5)])
def test_aspect_ratio_kept_and_longer_side_20(h, w):
    canvas = np.ones((h + 200, w + 200), np.float32)
    canvas[100:100 + h, 100:100 + w] = 0.0  # a black rectangle on white
    out = to_mnist(encode(canvas))[0]
    bh, bw = ink_box(out, 0.5)
    assert max(bh, bw) == 20
    assert abs(min(bh, bw) - 20 * min(h, w) / max(h, w)) <= 1.0


@pytest.mark.parametrize("seed", range(6))
def test_centre_of_mass_within_half_pixel(seed):
    rng = np.random.default_rng(seed)
    ink = np.zeros((500, 700), np.float32)
    pts = rng.integers([50, 50], [650, 450], size=(5, 2)).astype(np.int32)  # a random polyline, anywhere
    cv2.polylines(ink, [pts], False, 1.0, int(rng.integers(8, 30)), cv2.LINE_AA)
    out = to_mnist(encode(1 - ink), single=True)[0]
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14.0) <= 0.5 and abs(cx - 14.0) <= 0.5


def test_thin_pen_line_from_a_big_photo_gets_mnist_thickness():
    ink = np.zeros((1200, 1200), np.float32)
    cv2.ellipse(ink, (600, 600), (250, 420), 0, 0, 360, 1.0, 3, cv2.LINE_AA)  # a "0" in 3-px pen
    out = to_mnist(encode(1 - ink, "JPEG", quality=92))[0]
    width = stroke_width(out > 0.5)
    assert 1.8 <= width <= 3.5  # MNIST: median 2.5, 90 % within 1.6-3.8 (same estimator)


def test_fat_marker_from_a_big_image_gets_mnist_thickness():
    ink = np.zeros((900, 900), np.float32)
    cv2.ellipse(ink, (450, 450), (200, 330), 0, 0, 360, 1.0, 110, cv2.LINE_AA)  # a "0" in a fat marker
    out = to_mnist(encode(1 - ink))[0]
    assert stroke_width(out > 0.5) <= 3.9  # would be ~6 px unchanged; MNIST's 95th percentile is 3.8
    assert out[14, 14] == 0  # the hole stays open


def test_specks_the_thinning_would_erase_are_kept():
    """Five lone pixels in a 38×5 crop measure as a bold stroke, and thinning it eroded them all: the empty crop
    was then divided by zero (a damaged PNG found by bench/bench_api_fuzz.py: answered 422, with a traceback in
    the server's log). What the thinning would erase is kept as it was."""
    crop = np.zeros((38, 5), np.float32)
    for y, x in [(1, 0), (37, 0), (35, 1), (32, 3), (30, 4)]:
        crop[y, x] = 1.0
    assert stroke_width(crop > 0) * BOX / 38 > W_BOLD  # measured bold: normalise thins it
    out = normalise(crop, crop > 0)
    assert out.shape == (28, 28) and np.isfinite(out).all() and out.max() == 1.0 and out.min() == 0.0


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_stroke_width_of_bars(width):
    bar = np.zeros((200, 40), bool)
    bar[10:190, 10:10 + width] = True
    assert stroke_width(bar) == pytest.approx(width, rel=0.1)


def test_mnist_stroke_widths_match_the_documented_range():
    widths = np.array([stroke_width(x > 127) for x in load_mnist("test")[0]])  # all 10,000: writers differ
    assert 2.3 < np.median(widths) < 2.6
    assert 0.03 < np.mean(widths < 1.6) < 0.08 and 0.03 < np.mean(widths > 3.8) < 0.08


def test_mnist_sized_digits_pass_through_unchanged(mnist_test):
    images = mnist_test[0][:300]
    diffs = [np.abs(to_mnist(encode(255 - x))[0] - x / 255.0).max() for x in images]
    assert np.median(diffs) < 0.02  # contrast stretch at most ~1 %; no resampling, no move
    assert np.mean(np.array(diffs) < 0.15) > 0.9


def test_mnist_accuracy_lost_at_most_0_1_point(trained_run, mnist_test):
    """3000 MNIST test digits as 28×28 black-on-white PNGs: to_mnist must not cost accuracy."""
    from mnist_cnn.predict import Predictor

    images, labels = mnist_test
    predictor = Predictor.from_checkpoint(trained_run)
    direct = predictor.predict_arrays(images.astype(np.float32) / 255).argmax(1)
    outs = [to_mnist(encode(255 - x)) for x in images]
    assert all(len(o) == 1 for o in outs)
    ours = predictor.predict_arrays(np.concatenate(outs)).argmax(1)
    acc_direct, acc_ours = (direct == labels).mean() * 100, (ours == labels).mean() * 100
    assert acc_direct > 90  # a real model (the fixture: ~96 % on all 10,000, less on the first 3000)
    assert acc_ours >= acc_direct - 0.1, (acc_direct, acc_ours)


# ------------------------------------------------------------------ numbers
def compose(digits: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """MNIST digits side by side on one line, ink bright, (28, n·28 + gaps)."""
    crops = [d[:, np.nonzero(d.max(0))[0].min():np.nonzero(d.max(0))[0].max() + 1] for d in digits]
    parts = sum(([c, np.zeros((28, gap), np.uint8)] for c in crops), [np.zeros((28, gap), np.uint8)])
    return np.concatenate(parts, axis=1)


def first_of(labels: np.ndarray, digit: int, nth: int = 0) -> int:
    return int(np.flatnonzero(labels == digit)[nth])


def test_number_2026_split_left_to_right(trained_run, mnist_test):
    from mnist_cnn.predict import Predictor

    images, labels = mnist_test
    digits = [images[first_of(labels, 2)], images[first_of(labels, 0)], images[first_of(labels, 2, 1)],
              images[first_of(labels, 6)]]
    photo = 1 - upscale(compose(digits), 6)
    out = to_mnist(encode(photo, "JPEG", quality=90))
    assert out.shape == (4, 28, 28)
    read = Predictor.from_checkpoint(trained_run).predict_arrays(out).argmax(1)
    assert "".join(map(str, read)) == "2026"
    assert to_mnist(encode(photo), single=True).shape == (1, 28, 28)


def test_broken_stroke_stays_one_digit_and_specks_are_dropped(mnist_test):
    images, labels = mnist_test
    seven = upscale(images[first_of(labels, 7)], 10)  # (280, 280), ink bright
    clean = to_mnist(encode(np.pad(1 - seven, 60, constant_values=1)))
    broken = seven.copy()
    broken[150:162] = 0  # a gap across the stem
    broken = np.pad(broken, 60)
    cv2.circle(broken, (30, 30), 4, 1.0, -1)  # specks on the paper
    cv2.circle(broken, (370, 350), 3, 1.0, -1)
    out = to_mnist(encode(1 - broken))
    assert out.shape == (1, 28, 28)
    assert np.abs(out[0] - clean[0]).mean() < 0.05


# ------------------------------------------------------------------ photos, modes, orientation
def test_photo_uneven_light_coloured_paper_and_noise(mnist_test):
    images, labels = mnist_test
    ink = np.pad(upscale(images[first_of(labels, 4)], 12), 80)
    clean = to_mnist(encode(1 - ink))[0]
    h, w = ink.shape
    light = np.linspace(0.45, 1.0, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 1), np.float32)
    paper, pen = np.array([0.98, 0.9, 0.55], np.float32), np.array([0.1, 0.15, 0.6], np.float32)  # blue on yellow
    photo = (paper * (1 - ink[..., None]) + pen * ink[..., None]) * light
    photo += np.random.default_rng(0).normal(0, 0.03, photo.shape).astype(np.float32)
    out = to_mnist(encode(photo, "JPEG", quality=80))
    assert out.shape == (1, 28, 28)
    assert np.corrcoef(out[0].ravel(), clean.ravel())[0, 1] > 0.9


def test_every_mode_gives_the_same_digit():
    sample = sorted(SAMPLES.glob("7_*.png"))[0]
    grey = np.asarray(Image.open(sample).convert("L"))  # black on white, 28×28
    ref = to_mnist(encode(grey))[0]
    alpha = 255 - grey
    variants = {
        "RGBA black on transparent": Image.fromarray(np.dstack([np.zeros_like(grey)] * 3 + [alpha]), "RGBA"),
        "RGBA white on transparent": Image.fromarray(np.dstack([np.full_like(grey, 255)] * 3 + [alpha]), "RGBA"),
        "LA": Image.fromarray(np.dstack([np.zeros_like(grey), alpha]), "LA"),
        "P with transparency": Image.fromarray(grey).convert("P"),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 257),
        "CMYK": Image.fromarray(grey).convert("CMYK"),
        "1": Image.fromarray(grey).convert("1", dither=Image.Dither.NONE),
    }
    variants["P with transparency"].info["transparency"] = 255
    for name, img in variants.items():
        buf = io.BytesIO()
        img.save(buf, "TIFF" if img.mode == "CMYK" else "PNG")
        out = to_mnist(buf.getvalue())
        assert out.shape == (1, 28, 28), name
        assert np.abs(out[0] - ref).mean() < 0.08, name


@pytest.mark.parametrize("orientation, undo", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                                               (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_applied(orientation, undo):
    upright = Image.open(sorted(SAMPLES.glob("4_*.png"))[0]).convert("L").resize((112, 112))
    ref = to_mnist(upright)[0]
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    upright.transpose(undo).save(buf, "JPEG", quality=95, exif=exif.tobytes())  # stored sideways, tagged
    out = to_mnist(buf.getvalue())[0]
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.95


# ------------------------------------------------------------------ bad input
def test_blank_and_uniform_images_hold_no_digit():
    assert to_mnist(encode(np.full((200, 300), 255, np.uint8))).shape == (0, 28, 28)
    assert to_mnist(encode(np.zeros((28, 28), np.uint8))).shape == (0, 28, 28)
    assert to_mnist(encode(np.full((480, 640, 3), 120, np.uint8), "JPEG", quality=30)).shape == (0, 28, 28)
    ramp = np.tile(np.linspace(0.3, 0.9, 640, dtype=np.float32), (480, 1))  # shading, nothing written
    assert to_mnist(encode(ramp, "JPEG", quality=85)).shape == (0, 28, 28)


def test_truncated_text_svg_missing_and_folder_are_clear_errors(tmp_path):
    png = (SAMPLES / sorted(p.name for p in SAMPLES.glob("3_*.png"))[0]).read_bytes()
    cases = {
        "truncated": (png[: len(png) // 2], "truncated"),
        "text": (b"hello, this is not an image\n" * 20, "not an image"),
        "svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>', "SVG"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(MnistCnnError, match=message):
            to_mnist(data)
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        with pytest.raises(MnistCnnError, match=message) as err:
            to_mnist(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "d.svg").write_bytes(b"<svg/>")
    for path, message in [(tmp_path / "d.svg", "SVG"), (tmp_path / "missing.png", "not found"), (tmp_path, "folder")]:
        with pytest.raises(MnistCnnError, match=message):
            to_mnist(path)


def test_animated_gif_reads_the_first_frame():
    frames = [Image.open(sorted(SAMPLES.glob(f"{d}_*.png"))[0]).convert("L") for d in (3, 8, 1)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = to_mnist(buf.getvalue())
    assert out.shape == (1, 28, 28)
    assert np.abs(out[0] - to_mnist(frames[0])[0]).mean() < 0.02


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width``×``height`` with almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 20000, 100000])
def test_decompression_bomb_refused_before_decoding(side):
    t0 = time.perf_counter()
    with pytest.raises(MnistCnnError, match="too large"):
        to_mnist(png_header_only(side, side))
    assert time.perf_counter() - t0 < 2.0  # refused from the header: nothing was decoded


def test_big_jpeg_is_decoded_shrunk(mnist_test):
    images, labels = mnist_test
    photo = np.ones((3000, 4000), np.float32)
    photo[1000:2400, 1500:2900] = 1 - upscale(images[first_of(labels, 3)], 50)
    data = encode(photo, "JPEG", quality=85)
    assert max(open_image(data).size) <= 2 * WORK_SIDE  # draft mode: decoded at 1/2-1/8 scale
    assert to_mnist(data).shape == (1, 28, 28)


# ------------------------------------------------------------------ speed, imports
def test_a_28x28_png_is_fast_and_scipy_is_not_imported():
    code = ("import sys, time; from mnist_cnn.preprocess import to_mnist\n"
            f"data = open({str(sorted(SAMPLES.glob('5_*.png'))[0])!r}, 'rb').read(); to_mnist(data)\n"
            "ts = []\nfor _ in range(50):\n    t = time.perf_counter(); to_mnist(data); ts.append(time.perf_counter() - t)\n"
            "print(sorted(ts)[25] * 1e3, 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    ms, scipy_loaded = out.stdout.split()
    assert scipy_loaded == "False"
    assert float(ms) < 25  # ~1 ms on an idle core; the bound only catches a photo-sized path on a tiny input


def digit_crops(img: Image.Image) -> tuple[np.ndarray | None, list]:
    """A grey image → (the sheet mask or None, the digits' crops), as to_mnist finds them."""
    from mnist_cnn.segment import find_digits, ink_and_sheet

    ink, sheet = ink_and_sheet(np.asarray(img, np.float32) / 255)
    return sheet, find_digits(ink, sheet=sheet)


def test_a_thick_zero_filling_a_clean_canvas_is_read_whole_not_as_its_hole():
    """A canvas's border that is all one level is the paper, however much of the image the digit covers: a
    bold 0 two pixels from every edge once split the paper into a "sheet" (its hole) and a "table" (the ring)."""
    from PIL import ImageDraw

    img = Image.new("L", (499, 432), 255)
    draw = ImageDraw.Draw(img)
    draw.ellipse((2, 2, 420, 429), fill=0)
    draw.ellipse((122, 158, 300, 273), fill=255)
    sheet, crops = digit_crops(img)
    assert sheet is None and len(crops) == 1 and crops[0][0].shape[0] > 400 and crops[0][0].shape[1] > 400


def test_a_large_blurred_digit_on_a_canvas_keeps_its_polarity():
    """Blur spreads a large digit over most of a canvas: the paper is the level most of the border has, not a
    quadratic bent to the ink (which made the paper around the digit the ink)."""
    from PIL import ImageDraw, ImageFilter

    from mnist_cnn.segment import ink_map

    img = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(img).line([(10, 150), (290, 150)], fill=0, width=120)
    ink = ink_map(np.asarray(img.filter(ImageFilter.GaussianBlur(15)), np.float32) / 255)
    assert ink[150, 150] > 0.9 and ink[40, 150] < 0.1 and ink[3, 3] < 0.1


def test_a_large_digit_cut_by_the_edge_is_not_dropped_for_a_stray_mark_beside_it():
    """A tight crop cuts a bold 7 at the bottom edge, and a short stray stroke lies beside it: the 7 crosses the
    border along one stroke width, so it is the digit, not a frame line (the stray mark alone was read). A
    straight bar reaching in from the edge (a pen) is still no digit beside a small one."""
    from PIL import ImageDraw

    img = Image.new("L", (600, 420), 255)
    draw = ImageDraw.Draw(img)
    draw.line([(150, 60), (420, 60), (260, 420)], fill=0, width=55, joint="curve")  # the 7, cut by the edge
    draw.line([(540, 250), (540, 370)], fill=0, width=25)  # the stray mark, about a tenth of the 7's ink
    _, crops = digit_crops(img)
    assert len(crops) == 1 and crops[0][0].shape[0] > 330  # the 7 (with the mark beside it), not the mark alone

    img = Image.new("L", (800, 600), 245)  # a pen reaching in from the edge beside a small 3: the 3 is read
    draw = ImageDraw.Draw(img)
    draw.line([(330, 250), (390, 250), (360, 290), (395, 320), (360, 360), (330, 350)], fill=20, width=9,
              joint="curve")
    draw.line([(600, 600), (650, 250)], fill=20, width=24)
    _, crops = digit_crops(img)
    assert len(crops) == 1 and crops[0][0].shape[0] < 130  # the 3 (119 px tall), not the pen (352 px)
