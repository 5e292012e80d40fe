"""The evaluation report's pictures, drawn with matplotlib's non-interactive Agg backend (no pyplot).

``plot_confusion``, ``plot_mistakes`` and ``plot_history`` each write one PNG; ``mnist_cnn.evaluate`` calls
them (``mnist-cnn evaluate`` → ``confusion.png``, ``mistakes.png``, ``history.png``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def _figure(**kw):
    """A matplotlib Figure drawn by Agg, without pyplot: no display, no global state, safe in threads."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> None:
    """Counts in every non-zero cell: correct reads in blue, errors in red on a log scale (a single error
    still shows), empty cells white."""
    from matplotlib.colors import LogNorm

    k = len(cm)
    diagonal = np.eye(k, dtype=bool)
    errors = np.ma.masked_where(diagonal | (cm == 0), cm)
    fig = _figure(figsize=(8.4, 7.2), dpi=110)
    ax = fig.subplots()
    ax.imshow(np.ma.masked_where(~diagonal, cm), cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1) * 1.1)
    im = ax.imshow(errors, cmap="Reds", norm=LogNorm(vmin=0.4, vmax=max(int(errors.max() or 1), 2)))
    for t in range(k):
        for p in range(k):
            if cm[t, p] or t == p:  # a 0 on the diagonal matters: that digit was never read right
                dark = cm[t, p] > 0.5 * cm.max() if t == p else cm[t, p] > 0.4 * max(int(errors.max() or 1), 2)
                ax.text(p, t, f"{cm[t, p]:d}", ha="center", va="center", fontsize=9,
                        color="white" if dark else "black", fontweight="bold" if t == p else "normal")
    ax.set_xticks(range(k), [str(i) for i in range(k)])
    ax.set_yticks(range(k), [f"{t}  (n={cm[t].sum():,})" for t in range(k)])
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title)
    ax.set_xticks(np.arange(-0.5, k), minor=True)
    ax.set_yticks(np.arange(-0.5, k), minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="misread images (log scale)")
    ticks = [v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if v <= im.norm.vmax]
    bar.set_ticks(ticks, labels=[str(v) for v in ticks])
    bar.minorticks_off()
    fig.savefig(path, bbox_inches="tight")


def plot_mistakes(images: np.ndarray, truth: np.ndarray, guess: np.ndarray, confidence: np.ndarray,
                  path: Path, title: str, captions: list[str] | None = None) -> None:
    """A grid of misread images (dark ink on white), each titled "true → guess" and the confidence.

    Args:
        images: (M,28,28) uint8 as the model saw them (ink bright); drawn inverted, like ink on paper.
        captions: an optional short line under each image (e.g. the file name).
    """
    m = len(images)
    cols = min(8, max(m, 1))
    rows = max(1, math.ceil(m / cols))
    fig = _figure(figsize=(1.5 * cols + 0.3, (2.0 if captions else 1.8) * rows + 0.6), dpi=110)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= m:
            ax.axis("off")
            continue
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a light frame: the 28x28 box the model saw
            spine.set_color("#cccccc")
        ax.set_title(f"true {truth[i]} → {guess[i]}\n{confidence[i]:.1%} sure", fontsize=9, color="#b00020")
        if captions:
            ax.set_xlabel(captions[i][-22:], fontsize=7, color="#555555")
    if m == 0:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def read_metrics(path: Path) -> dict[str, list[float]]:
    """metrics.csv → {column: values}; the columns train.py writes (epoch, train_loss, test_acc, …)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def plot_history(metrics_csv: Path, path: Path, title: str) -> bool:
    """Loss and accuracy per epoch, train and test side by side; False when there is nothing to plot."""
    cols = read_metrics(metrics_csv)
    if not cols.get("epoch"):
        return False
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs = cols["epoch"]
    fig = _figure(figsize=(10, 4), dpi=110)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, what, ylabel in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "o-"), ("test", "s-")):
            values = cols.get(f"{split}_{what}")
            if values:
                last = f"{values[-1]:.2%}" if what == "acc" else f"{values[-1]:.4f}"
                name = "train, epoch mean" if split == "train" else split
                ax.plot(epochs, values, style, label=f"{name} (last: {last})", markersize=5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.margins(x=0.08)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_loss.set_title("loss per epoch")
    ax_acc.set_title("accuracy per epoch")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    return True
