"""Predictions: ``Predictor.from_checkpoint(path).predict_file("digit.png")``.

    PYTHONPATH=. python -c "from mnist_cnn.predict import Predictor; print(Predictor.from_checkpoint().predict_file('samples/7_mnist_test_0017.png').to_dict())"

One Predictor serves the CLI and the HTTP server. It runs on ONNX Runtime when there is an ONNX file to use
(a shipped model, or a run's ``model.onnx`` in step with its checkpoint; see resolve.py), with no torch
import, and on PyTorch otherwise; both give the same answers (engine.py). Softmax is applied here, at the
edge, on logits divided by the model's ``temperature``, so confidences are calibrated.

Each digit is judged as well as read (calibrate.py): "unsure" when its calibrated confidence is under
``MIN_CONFIDENCE`` (the model hesitates between digits), its energy is above the checkpoint's
``reject_energy`` (it looks like none of the digits the model was trained on: a shoe, a letter, a smudge), or
its ink is thicker than a pen stroke (``calibrate.is_filled``: a filled shape). An image is "no digit found"
when preprocessing finds no ink, "unsure" when any of its digits is, else "ok".

A digit the model hesitates over (calibrated confidence under ``STEADY_BELOW``) is read again shifted by one
pixel up, down, left and right, and its logits are averaged over the five: MNIST's own centring is only to the
nearest pixel, so a reading that flips with a 1-px shift is noise. Few digits take the extra pass (one
batched call; its cost and gain are in bench/RESULTS.md, "Real images"); confident digits are untouched. The
energy is that of the input as given, so "not a digit" does not change. ``predict_arrays`` (what
``evaluate`` scores) is the network alone, so its accuracy is the one training reports.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_cnn import MnistCnnError
from mnist_cnn.calibrate import MAX_CORE_PIXELS, MAX_STROKE_RADIUS, MIN_CONFIDENCE, energy, is_filled, softmax
from mnist_cnn.engine import Engine, OnnxEngine, TorchEngine
from mnist_cnn.preprocess import IMAGE_SUFFIXES, to_mnist
from mnist_cnn.resolve import Model, resolve

OK, UNSURE, NO_DIGIT = "ok", "unsure", "no digit found"
LOW_CONFIDENCE, NOT_A_DIGIT, NOT_A_STROKE = ("low confidence", "unlike the digits the model knows",
                                             "a filled shape, not a pen stroke")
STEADY_BELOW = 0.9  # calibrated confidence under which a digit is read again with 1-px shifts (see above)
SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (rows, columns)
@dataclass
class Prediction:
    """What the model read in one image: one entry per digit found, left to right."""

    source: str
    digits: list[int] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)  # (k,10), calibrated
    confidence: list[float] = field(default_factory=list)  # (k,) the calibrated probability of each digit read
    energy: list[float] = field(default_factory=list)  # (k,) -logsumexp(logits): high = unlike any digit
    reasons: list[str] = field(default_factory=list)  # (k,) "" when sure, else why unsure
    inputs: np.ndarray | None = field(default=None, repr=False)  # (k,28,28) what the model saw

    @property
    def number(self) -> str:
        return "".join(str(d) for d in self.digits)

    @property
    def status(self) -> list[str]:
        """Per digit: "ok" or "unsure"."""
        return [UNSURE if r else OK for r in self.reasons]

    @property
    def verdict(self) -> str:
        """"no digit found", "unsure" (any digit unsure) or "ok"."""
        if not self.digits:
            return NO_DIGIT
        return UNSURE if any(self.reasons) else OK

    def to_dict(self) -> dict:
        return {"source": self.source, "number": self.number, "digits": self.digits,
                "confidence": [round(c, 6) for c in self.confidence],
                "probabilities": [[round(p, 6) for p in row] for row in self.probabilities],
                "verdict": self.verdict, "status": self.status, "reasons": self.reasons,
                "energy": [round(e, 4) for e in self.energy]}


def shifted(x: np.ndarray) -> np.ndarray:
    """(N,28,28) → (len(SHIFTS)·N,28,28): each input moved by each of SHIFTS (zeros come in), shift-major."""
    n, h, w = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    return np.concatenate([padded[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w] for dy, dx in SHIFTS])


class Predictor:
    """Loads a model once; predicts on arrays, files and bytes, and says when it is unsure."""

    def __init__(self, engine: Engine, checkpoint: Path, min_confidence: float = MIN_CONFIDENCE):
        self.engine = engine
        self.checkpoint = checkpoint
        self.temperature = engine.meta.temperature
        self.reject_energy = engine.meta.reject_energy
        self.min_confidence = min_confidence
        self.logits(np.zeros((1, 28, 28), np.float32))  # a model with NaN/inf weights is refused here, once

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The engine's logits; MnistCnnError when they are not finite (NaN/inf weights: every answer would be
        NaN, printed as a digit with confidence nan and as invalid JSON)."""
        out = self.engine.logits(x)
        if not np.isfinite(out).all():
            raise MnistCnnError(f"the model in {self.checkpoint} gives NaN or infinite outputs: its weights are "
                                f"damaged (NaN/inf); retrain it or use another checkpoint")
        return out

    @classmethod
    def from_checkpoint(cls, where: str | Path | Model | None = None, engine: str = "auto") -> "Predictor":
        """``where``: what ``--checkpoint`` takes (see resolve.py), or None for the default model.

        engine: "auto" (ONNX Runtime when there is a usable ONNX file, else torch), "onnx" or "torch".
        """
        model = where if isinstance(where, Model) else resolve(where, engine)
        if engine != "torch" and model.onnx is not None:
            return cls(OnnxEngine(model.onnx), model.onnx)
        if engine == "onnx":
            raise MnistCnnError(f"no model.onnx in step with the checkpoint at {model.label}: run mnist-cnn export")
        if model.checkpoint is None:
            raise MnistCnnError(f"{model.label} is an ONNX model: it runs with --engine auto or onnx, not torch")
        return cls(TorchEngine(model.checkpoint), model.checkpoint)

    def assess(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(N,28,28) floats in [0,1], ink bright → ((N,10) calibrated probabilities, (N,) energies, reasons)."""
        x = x.astype(np.float32, copy=False)
        logits = self.logits(x)
        probs, energies, filled = self._steadied(x, logits), energy(logits), is_filled(x)
        line = np.inf if self.reject_energy is None else self.reject_energy
        reasons = [NOT_A_STROKE if f else NOT_A_DIGIT if e > line
                   else LOW_CONFIDENCE if p.max() < self.min_confidence else ""
                   for p, e, f in zip(probs, energies, filled)]
        return probs, energies, reasons

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """(N,28,28) floats in [0,1], ink bright → (N,10) calibrated probabilities of the network alone, with no
        shift averaging: what ``evaluate`` scores, the same figure as training's test accuracy."""
        return softmax(self.logits(x.astype(np.float32, copy=False)), self.temperature)

    def _steadied(self, x: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities; a digit under STEADY_BELOW gets its logits averaged with those of its
        1-px shifts (one batched call for all of them)."""
        probs = softmax(logits, self.temperature)
        unsure = np.flatnonzero(probs.max(1) < STEADY_BELOW)
        if unsure.size:
            more = self.logits(shifted(x[unsure])).reshape(len(SHIFTS), unsure.size, -1)
            probs[unsure] = softmax((logits[unsure] + more.sum(0)) / (len(SHIFTS) + 1), self.temperature)
        return probs

    def predict_image(self, src, source: str = "image", single: bool = False) -> Prediction:
        """A path, bytes or PIL image → Prediction (no digits when the image holds no ink).

        single: read the whole image as one digit instead of splitting it into several.
        """
        inputs = to_mnist(src, single=single)
        pred = Prediction(source=source, inputs=inputs)
        if len(inputs):
            probs, energies, pred.reasons = self.assess(inputs)
            pred.digits = [int(i) for i in probs.argmax(1)]
            pred.probabilities = probs.tolist()
            pred.confidence = [float(p) for p in probs.max(1)]
            pred.energy = [float(e) for e in energies]
        return pred

    def predict_file(self, path: str | Path, single: bool = False) -> Prediction:
        return self.predict_image(Path(path), source=str(path), single=single)

    def describe(self) -> dict:
        rejection = ("calibrated confidence < min_confidence, ink too thick for a pen (stroke radius > "
                     "max_stroke_radius or more than max_core_pixels deeper than 3 px)") + (
            ", or energy > reject_energy" if self.reject_energy is not None else
            " (this model has no reject_energy: retrain or re-export it to also reject what is unlike a digit)")
        return {"engine": self.engine.name, "checkpoint": str(self.checkpoint), **self.engine.meta.to_dict(),
                "temperature": self.temperature, "reject_energy": self.reject_energy,
                "min_confidence": self.min_confidence, "max_stroke_radius": MAX_STROKE_RADIUS,
                "max_core_pixels": MAX_CORE_PIXELS, "unsure_when": rejection}


# ---------------------------------------------------------------- many files
def _folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden ones skipped), in a stable sorted order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files)
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return found


def expand_inputs(args: list[str]) -> list[tuple[str, str | None]]:
    """Files, folders and glob patterns → [(path, None)] to read, or [(arg, error)] for what cannot be.

    Globs are expanded here too (``'digits/**/*.png'`` quoted, or on Windows), so a pattern works whether or
    not a shell expanded it. Duplicates are read once, in the order first named.
    """
    out: list[tuple[str, str | None]] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = _folder_images(path)
            out += [(str(f), None) for f in files] or [(arg, f"{arg}: no image files in this folder")]
        elif path.exists() or not any(c in arg for c in "*?["):
            out.append((arg, None))  # a missing file is reported when it is read, in its turn
        else:
            matches = sorted(glob.glob(arg, recursive=True))
            files = [f for m in matches for f in ([str(p) for p in _folder_images(Path(m))] if Path(m).is_dir() else [m])]
            out += [(f, None) for f in files] or [(arg, f"{arg}: no files match this pattern")]
    seen: set[str] = set()
    return [item for item in out if not (item[0] in seen or seen.add(item[0]))]


def save_inputs(pred: Prediction, folder: Path, taken: set[str]) -> list[Path]:
    """Write each 28×28 input the model saw as ``folder/<name>_<i>.png`` (ink bright, as the model saw it)."""
    from PIL import Image

    if pred.inputs is None or not len(pred.inputs):
        return []
    folder.mkdir(parents=True, exist_ok=True)
    stem, n = Path(pred.source).stem or "image", 1
    name = stem
    while name in taken:  # the same file name from two folders
        n += 1
        name = f"{stem}-{n}"
    taken.add(name)
    paths = []
    for i, a in enumerate(pred.inputs):
        paths.append(folder / f"{name}_{i}.png")
        Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8), "L").save(paths[-1])
    return paths


__all__ = ["Predictor", "Prediction", "MnistCnnError", "softmax", "expand_inputs", "save_inputs"]
