"""Confidence and "not a digit": temperature scaling and an energy threshold, both fitted on held-out digits.

    PYTHONPATH=. python -c "from mnist_cnn.calibrate import energy; import numpy as np; print(energy(np.zeros((1, 10))))"

* ``fit_temperature(logits, labels)`` finds the T that minimises the negative log-likelihood of
  softmax(logits / T) (Guo et al., 2017); the predictor divides logits by it, so a reported confidence of 0.9
  is right about 9 times in 10.
* ``fit_energy_threshold(logits, temperature)`` sets the "not a digit" line. The energy score
  E(x) = -logsumexp(logits) (Liu et al., 2020) is low where the network has seen data like x and high
  elsewhere; unlike the top probability it does not saturate at 1 for inputs far from every class. The line is
  the energy that leaves ``rate`` of the held-out digits rejected, together with those whose calibrated
  confidence is under ``MIN_CONFIDENCE``: it comes from digits only, never from examples of non-digits.

* ``thick_ink(x)``: how far each 28×28 input's ink is from a pen stroke: the radius of the largest disc that
  fits inside the ink, and how many ink pixels lie deeper than ``CORE_DEPTH`` = 3 px inside it. A pen stroke
  in MNIST's 20-px box is 1-5 px across; a filled shape (a square, a T-shirt, a photo of an object) is not a
  stroke. ``MAX_STROKE_RADIUS`` and ``MAX_CORE_PIXELS`` are properties of the MNIST format that
  ``preprocess.to_mnist`` produces, not of a model: 99.96 % of the 60,000 training digits have a radius
  <= 5.5 px, 99.9 % have at most 45 core pixels (tests/test_predict.py recomputes both), and no user-like
  digit of bench/realistic.py exceeds either. The core count catches shapes that are filled but not wide
  enough for the radius test (a T-shirt is ~12 px wide in the 20-px box).

Training calls the first two at every epoch end on the held-out split and stores ``temperature`` and
``reject_energy`` in the checkpoint. numpy only (no torch).
"""

from __future__ import annotations

import numpy as np

from mnist_cnn.pixels import distance_inside, erode

MIN_CONFIDENCE = 0.5  # calibrated top probability under which a digit is "unsure" (less likely right than not)
REJECT_RATE = 0.008  # share of held-out digits the two tests may reject together (the target is <= 1 %)
MAX_STROKE_RADIUS = 5.5  # px in the 28×28 input: thicker ink is a filled shape, not a pen stroke (see above)
CORE_DEPTH, MAX_CORE_PIXELS = 3.0, 45  # more ink pixels than this deeper than 3 px inside: a filled shape


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(logits, temperature))


def energy(logits: np.ndarray) -> np.ndarray:
    """(N,10) logits → (N,) energy -logsumexp(logits); lower means more like the training digits."""
    z = logits.astype(np.float64)
    top = z.max(axis=-1)
    return -(top + np.log(np.exp(z - top[..., None]).sum(axis=-1)))


def thick_ink(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,28,28) inputs in [0,1] → ((N,) radius in px of the largest disc inside the ink (pixels > 0.5),
    (N,) count of ink pixels deeper than CORE_DEPTH inside it)."""
    depth = distance_inside(np.asarray(x).reshape(-1, *np.shape(x)[-2:]) > 0.5)
    return depth.max(axis=(1, 2)).astype(np.float64), (depth >= CORE_DEPTH).sum(axis=(1, 2)).astype(np.int64)


def is_filled(x: np.ndarray) -> np.ndarray:
    """(N,) bool: ink too thick to be a pen stroke (see thick_ink). The exact test runs only where some pixel
    has its whole 5×5 square inked: elsewhere no pixel is 3 px deep (the square's corners are 2.83 px away),
    so the ink is a stroke; that is most digits, and this runs for each one read."""
    ink = np.asarray(x).reshape(-1, *np.shape(x)[-2:]) > 0.5
    filled = np.zeros(len(ink), bool)
    deep = np.flatnonzero(erode(ink, 5).any(axis=(1, 2)))  # past the border counts as ink, as in thick_ink
    if deep.size:
        radius, core = thick_ink(ink[deep].astype(np.float32))
        filled[deep] = (radius > MAX_STROKE_RADIUS) | (core > MAX_CORE_PIXELS)
    return filled


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_probs = log_softmax(logits, temperature)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins."""
    conf, right = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    gaps = [abs(conf[which == b].mean() - right[which == b].mean()) * (which == b).mean()
            for b in range(bins) if (which == b).any()]
    return float(sum(gaps))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-4) -> float:
    """The temperature in [0.05, 20] minimising held-out NLL; 1.0 when there is nothing to fit.

    A golden-section search on log T, to ``tol``: the NLL is convex in 1/T, so it has one minimum on the
    interval. Written here rather than taken from scipy.optimize, whose import would cost training a share of
    its peak-RSS budget for this one call (bench/RESULTS.md, "Training"); tests check it against scipy.
    """
    if len(labels) == 0:
        return 1.0

    def f(log_t: float) -> float:
        return nll(logits, labels, float(np.exp(log_t)))

    ratio = (np.sqrt(5) - 1) / 2
    lo, hi = np.log(0.05), np.log(20.0)
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return float(np.exp((lo + hi) / 2))


def fit_energy_threshold(logits: np.ndarray, temperature: float = 1.0, rate: float = REJECT_RATE,
                         min_confidence: float = MIN_CONFIDENCE) -> float | None:
    """The energy above which an input is "not a digit", from held-out digits' logits; None if too few.

    Held-out digits already unsure by confidence count against ``rate``; the energy line takes the rest, so
    that both tests together reject ``rate`` of the held-out digits.
    """
    n = len(logits)
    if n < 100:  # under 100 digits the tail quantile is mostly noise: predict falls back to confidence alone
        return None
    e = energy(logits)
    confident = softmax(logits, temperature).max(1) >= min_confidence
    kept = np.sort(e[confident])
    if not len(kept):  # no held-out digit is read with confidence (an untrained model): nothing to fit
        return None
    allowed = min(int(np.floor(rate * n)) - int((~confident).sum()), len(kept) - 1)  # confident ones to let go
    if allowed <= 0:
        return float(kept[-1])
    return float(kept[-allowed - 1])  # rejected: energy strictly above this, i.e. the `allowed` highest
