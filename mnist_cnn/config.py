"""TrainConfig: every training default and its help text, in one place.

The CLI builds its ``train`` flags from these fields; a run records them in ``config.json`` and in every
checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mnist_cnn.resolve import DEFAULT_RUN


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    epochs: int = _opt(2, "passes over the training set")
    batch_size: int = _opt(128, "images per optimizer step (per process under torchrun; the global batch "
                                "is this times the number of processes)")
    lr: float = _opt(1.5e-2, "peak learning rate of Adam (constant with --schedule constant)")
    schedule: str = _opt("onecycle", "learning-rate schedule", choices=("onecycle", "constant"))
    model: str = _opt("tutorial", "network from the model registry (tutorial = the TF tutorial's 93,322-"
                                  "parameter CNN)")
    augment: bool = _opt(False, "augment for real handwriting on the training device: affine and elastic "
                                "distortion, stroke width, low resolution, blur, tone, noise (augment.py)")
    outliers: float = _opt(0.0, "add this share of the batch as synthetic non-digits with a uniform target, so "
                                "that unlike-a-digit input is recognised (outliers.py); 0: none")
    label_smoothing: float = _opt(0.05, "label smoothing of the cross-entropy (0: none)")
    ema: float = _opt(0.0, "decay of an exponential moving average of the weights, which is what gets "
                           "evaluated, saved and exported (e.g. 0.999; 0: none)")
    seed: int = _opt(0, "seed for weights and the per-epoch shuffling")
    run_dir: str = _opt(str(DEFAULT_RUN), "folder for checkpoints, metrics.csv, config.json, model.onnx")
    save_every: int = _opt(200, "save a checkpoint every N optimizer steps (and at each epoch end); 0: epoch ends only")
    keep: int = _opt(3, "keep the newest N cp-*.pt checkpoints (last.pt and best.pt are always kept)")
    resume: str = _opt("auto", "auto: continue from the run folder's latest checkpoint if any; never: start "
                               "fresh; or a checkpoint PATH to continue from (e.g. to fine-tune)")
    holdout: int = _opt(2000, "hold out the last N training images (at most a tenth): they choose best.pt and "
                              "fit the confidence temperature; they are not trained on")
    limit: int = _opt(0, "use only the first N training images (0: all); for quick trials and tests")
    device: str = _opt("auto", "auto picks cuda when available", choices=("auto", "cpu", "cuda"))
    precision: str = _opt("auto", "auto: bf16 autocast when a few timed steps on this machine show it faster "
                                  "(measured once, cached; precision.py), else fp32", choices=("auto", "fp32", "bf16"))
    data: str = _opt("", "training data: a folder with the four MNIST IDX files (.gz or not), a Keras "
                         "mnist.npz, or a folder of labelled images; default: the bundled data/mnist")
    mix_mnist: int = _opt(0, "with --data: also train on the first N bundled MNIST training images, so that a model "
                             "fine-tuned on your own digits keeps reading MNIST (0: none)")
    export_onnx: bool = _opt(True, "export model.onnx next to best.pt at the end, for fast predictions")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
