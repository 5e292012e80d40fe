"""Predictions: ``Predictor.from_checkpoint(path).predict_file("digit.png")``.

One Predictor serves the CLI and the HTTP server. It runs on ONNX Runtime when the run folder holds a
``model.onnx`` in step with its checkpoint (no torch import: a cold ``mnist-cnn predict`` stays fast), and
on PyTorch otherwise; both give the same answers. Softmax is applied here, at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_cnn import MnistCnnError
from mnist_cnn.preprocess import to_mnist

DEFAULT_RUN = Path("runs/mnist")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Prediction:
    """What the model read in one image: one entry per digit found, left to right."""

    source: str
    digits: list[int] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)  # (k,10)
    confidence: list[float] = field(default_factory=list)
    inputs: np.ndarray | None = field(default=None, repr=False)  # (k,28,28) what the model saw

    @property
    def number(self) -> str:
        return "".join(str(d) for d in self.digits)

    def to_dict(self) -> dict:
        return {"source": self.source, "number": self.number, "digits": self.digits,
                "confidence": [round(c, 6) for c in self.confidence],
                "probabilities": [[round(p, 6) for p in row] for row in self.probabilities]}


class TorchEngine:
    """Logits from a checkpoint with PyTorch (imported here, only when this engine is used)."""

    name = "torch"

    def __init__(self, ckpt_path: Path, device: str = "cpu"):
        import torch

        from mnist_cnn.checkpoint import load_checkpoint
        from mnist_cnn.model import build_model

        ckpt = load_checkpoint(ckpt_path)
        self.torch = torch
        self.meta = {k: ckpt.get(k) for k in ("model_name", "step", "best_acc")}
        self.model = build_model(ckpt.get("model_name", "tutorial"))
        self.model.load_state_dict(ckpt["model"])
        self.model.eval().to(device)
        self.device = device

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            return self.model(t[:, None]).float().cpu().numpy()


class Predictor:
    """Loads a model once; predicts on arrays, files and bytes."""

    def __init__(self, engine, checkpoint: Path):
        self.engine = engine
        self.checkpoint = checkpoint

    @classmethod
    def from_checkpoint(cls, where: str | Path | None = None, engine: str = "auto") -> "Predictor":
        """``where``: a checkpoint file, a run folder, or None for the default run (runs/mnist).

        engine: "auto" (ONNX Runtime when an in-step model.onnx exists, else torch), "onnx" or "torch".
        """
        where = Path(where) if where else DEFAULT_RUN
        if engine in ("auto", "onnx"):
            try:
                from mnist_cnn.onnx_engine import OnnxEngine, onnx_for
            except ImportError:
                onnx_path = None
            else:
                onnx_path = onnx_for(where)
            if onnx_path is not None:
                return cls(OnnxEngine(onnx_path), onnx_path)
            if engine == "onnx":
                raise MnistCnnError(f"no model.onnx in step with the checkpoint at {where}: run mnist-cnn export")
        from mnist_cnn.checkpoint import find_checkpoint

        path = find_checkpoint(where)
        return cls(TorchEngine(path), path)

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """(N,28,28) floats in [0,1], ink bright → (N,10) probabilities."""
        return softmax(self.engine.logits(x.astype(np.float32, copy=False)))

    def predict_image(self, src, source: str = "image") -> Prediction:
        """A path, bytes or PIL image → Prediction (no digits when the image holds no ink)."""
        inputs = to_mnist(src)
        pred = Prediction(source=source, inputs=inputs)
        if len(inputs):
            probs = self.predict_arrays(inputs)
            pred.digits = [int(i) for i in probs.argmax(1)]
            pred.probabilities = probs.tolist()
            pred.confidence = [float(p) for p in probs.max(1)]
        return pred

    def predict_file(self, path: str | Path) -> Prediction:
        return self.predict_image(Path(path), source=str(path))

    def describe(self) -> dict:
        return {"engine": self.engine.name, "checkpoint": str(self.checkpoint), **self.engine.meta}


__all__ = ["Predictor", "Prediction", "MnistCnnError", "softmax"]
