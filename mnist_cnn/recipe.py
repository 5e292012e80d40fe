"""What the robust recipe adds to a training step: extra inputs, the outlier loss, the weights' average, and how
best.pt is chosen. ``train.py`` calls these; the flags are in config.py and docs/training.md.

    PYTHONPATH=. python -c "from mnist_cnn.recipe import is_best; print(is_best(0.9975, 0.998, 2000))"
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnist_cnn.augment import augment, step_generator
from mnist_cnn.config import TrainConfig
from mnist_cnn.outliers import non_digits

OUTLIER_WEIGHT = 0.5  # the outlier-exposure loss's weight against the digits' (Hendrycks et al. use 0.5)


def training_input(cfg: TrainConfig, x: torch.Tensor, step: int, rank: int) -> torch.Tensor:
    """The step's input from the digits ``x`` (B,1,28,28): then ``--outliers`` non-digits, all augmented with
    ``--augment``. Drawn from a generator seeded by (seed, step, rank), so a resumed run sees the same inputs.
    """
    if not (cfg.augment or cfg.outliers):
        return x
    g = step_generator(cfg.seed, step, x.device, rank)
    if cfg.outliers:
        x = torch.cat([x, non_digits(round(cfg.outliers * len(x)), g, x.device)])
    if cfg.augment:
        x = augment(x, g)
    return x.contiguous(memory_format=torch.channels_last)


def outlier_loss(logits: torch.Tensor) -> torch.Tensor:
    """The non-digits' loss: the cross-entropy to the uniform distribution over the 10 digits, averaged."""
    return -OUTLIER_WEIGHT * F.log_softmax(logits, 1).mean()


def ema_update(decay: float):
    """AveragedModel's update with a warm-up: decay min(decay, (1 + n) / (10 + n)) after n updates, so the
    average does not drag the random initial weights along for thousands of steps (as timm's ModelEmaV3)."""

    def update(averaged: list, current: list, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # BatchNorm's step counters: the current count
            torch._foreach_copy_(averaged, current)

    return update


def is_best(val_acc: float, best_val: float, n: int) -> bool:
    """Whether this epoch's weights become best.pt: held-out images choose, the test set is only reported.

    The newest weights win unless their held-out accuracy is more than one standard error below the best seen
    (the one-standard-error rule): on 2,000 held-out images a few images' difference is noise, and then the
    longer-trained weights are the better bet. Without held-out images the newest weights win.
    """
    if n == 0:
        return True
    top = max(val_acc, best_val)
    return val_acc >= top - math.sqrt(top * (1 - top) / n)


def note(cfg: TrainConfig) -> str:
    parts = [name for name, on in (("augmented", cfg.augment), (f"{cfg.outliers:g} outliers", cfg.outliers),
                                   (f"label smoothing {cfg.label_smoothing:g}", cfg.label_smoothing),
                                   (f"EMA {cfg.ema:g}", cfg.ema)) if on]
    return f"; {', '.join(parts)}" if parts else ""
