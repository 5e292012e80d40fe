"""pixels.py against OpenCV (a test tool here, not a dependency): the same results on random images."""

import cv2
import numpy as np
import pytest

from mnist_cnn import pixels
from mnist_cnn.data import load_mnist


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test", limit=500)


def masks(seed: int, n: int = 40):
    """Random masks of random sizes and densities, half of them thickened into blobs, some touching the border."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = rng.integers(3, 120, 2)
        m = rng.random((h, w)) < rng.uniform(0.05, 0.7)
        yield cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 if i % 2 else m


@pytest.mark.parametrize("connectivity", [4, 8])
def test_components_and_boxes_match_opencv(connectivity):
    for m in masks(connectivity):
        n_ref, ref, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=connectivity)
        n, labels = pixels.label(m, connectivity)
        pairs = set(zip(ref.ravel().tolist(), labels.ravel().tolist()))
        assert n == n_ref and len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        assert ((labels == 0) == ~m).all()
        same = dict(pairs)
        box = pixels.boxes(labels, n)
        for i in range(1, n_ref):
            assert box[same[i]].tolist() == stats[i, :4].tolist()


@pytest.mark.parametrize("size", [1, 3, 5, 7, 9, 15, 21])
def test_morphology_matches_opencv(size):
    rng = np.random.default_rng(size)
    a = rng.random((37, 52)).astype(np.float32)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    assert np.array_equal(cv2.dilate(a, disc), pixels.dilate(a, pixels.ellipse(size)))
    assert np.array_equal(cv2.erode(a, disc), pixels.erode(a, pixels.ellipse(size)))
    assert np.array_equal(cv2.morphologyEx(a, cv2.MORPH_OPEN, disc), pixels.opening(a, pixels.ellipse(size)))
    m = rng.random((30, 41)) > 0.6
    square = np.ones((size, size), np.uint8)
    assert np.array_equal(cv2.dilate(m.astype(np.uint8), square) > 0, pixels.dilate(m, size))
    assert np.array_equal(cv2.erode(m.astype(np.uint8), square) > 0, pixels.erode(m, size))


def test_otsu_blur_and_resampling_match_opencv():
    rng = np.random.default_rng(0)
    for _ in range(30):
        v = (rng.random(400) ** rng.uniform(0.3, 3) * 255).astype(np.uint8)
        assert pixels.otsu(v) == cv2.threshold(v.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0]
    a = rng.random((40, 55)).astype(np.float32)
    assert np.abs(pixels.gaussian_blur(a) - cv2.GaussianBlur(a, (0, 0), 1.0)).max() < 1e-5
    assert np.abs(pixels.resize(a, (110, 80), "linear") - cv2.resize(a, (110, 80))).max() < 1e-5
    assert np.abs(pixels.resize(a, (11, 10)) - cv2.resize(a, (11, 10), interpolation=cv2.INTER_AREA)).max() < 1e-5
    # a factor that is not a whole number: OpenCV and Pillow share out the edge pixels a little differently
    smooth = cv2.GaussianBlur(rng.random((300, 200)).astype(np.float32), (0, 0), 4)
    assert np.abs(pixels.resize(smooth, (48, 72)) - cv2.resize(smooth, (48, 72), interpolation=cv2.INTER_AREA)).max() < 0.01


def contour_length_by_opencv(mask):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return sum(cv2.arcLength(c, True) for c in contours)


def test_contour_length_matches_opencv(mnist_test):
    for m in [*masks(3, 60), *(x > 127 for x in mnist_test[0][:300])]:
        assert pixels.contour_length(m) == pytest.approx(contour_length_by_opencv(m), rel=1e-6, abs=1e-4)


def test_distance_inside_matches_opencv(mnist_test):
    ink = mnist_test[0][:500] > 127
    ref = np.stack([cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) for m in ink])
    assert np.abs(pixels.distance_inside(ink) - ref).max() < 1e-4
    assert np.isinf(pixels.distance_inside(np.ones((1, 5, 7), bool))).all()  # nothing outside: infinitely deep


def test_hull_mask_covers_the_points_and_is_convex():
    m = np.zeros((100, 120), bool)
    m[20:40, 30:90] = m[60:80, 10:50] = True
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    ref = cv2.fillConvexPoly(np.zeros(m.shape, np.uint8), cv2.convexHull(np.concatenate(contours)), 1)
    hull = pixels.hull_mask(m)
    assert hull[m].all() and (hull != ref).sum() < 0.01 * ref.sum()
    assert not pixels.hull_mask(np.zeros((5, 5), bool)).any()
