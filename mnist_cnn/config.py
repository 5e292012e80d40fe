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
    epochs: int = _opt(3, "passes over the training set")
    batch_size: int = _opt(64, "images per optimizer step (per process under torchrun; the global batch "
                                "is this times the number of processes)")
    lr: float = _opt(2e-3, "peak learning rate of Adam (constant with --schedule constant)")
    schedule: str = _opt("onecycle", "learning-rate schedule", choices=("onecycle", "constant"))
    model: str = _opt("tutorial", "network from the model registry (tutorial = the TF tutorial's 93,322-"
                                  "parameter CNN)")
    seed: int = _opt(0, "seed for weights and the per-epoch shuffling")
    run_dir: str = _opt(str(DEFAULT_RUN), "folder for checkpoints, metrics.csv, config.json, model.onnx")
    save_every: int = _opt(200, "save a checkpoint every N optimizer steps (and at each epoch end); 0: epoch ends only")
    keep: int = _opt(3, "keep the newest N cp-*.pt checkpoints (last.pt and best.pt are always kept)")
    resume: str = _opt("auto", "auto: continue from the run folder's latest checkpoint if any; never: start "
                               "fresh; or a checkpoint PATH to continue from (e.g. to fine-tune)")
    holdout: int = _opt(2000, "hold out the last N training images (at most a tenth) to fit the confidence "
                              "temperature; they are not trained on")
    limit: int = _opt(0, "use only the first N training images (0: all); for quick trials and tests")
    device: str = _opt("auto", "auto picks cuda when available", choices=("auto", "cpu", "cuda"))
    precision: str = _opt("auto", "auto: bf16 autocast where it is fast (CUDA, CPUs with AVX512-BF16/AMX), "
                                  "else fp32", choices=("auto", "fp32", "bf16"))
    data: str = _opt("", "training data: a folder with the four MNIST IDX files (.gz or not), a Keras "
                         "mnist.npz, or a folder of labelled images; default: the bundled data/mnist")
    mix_mnist: int = _opt(0, "with --data: also train on the first N bundled MNIST training images, so that a model "
                             "fine-tuned on your own digits keeps reading MNIST (0: none)")
    export_onnx: bool = _opt(True, "export model.onnx next to best.pt at the end, for fast predictions")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
