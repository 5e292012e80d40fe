"""Your own labelled digit images as an MNIST-like dataset: ``load_image_folder("my_digits", "train")``.

Two layouts, mixable in one folder:

    my_digits/3/anything.png        a subfolder per label (searched recursively)
    my_digits/3_anything.png        the label before the first underscore

Each image goes through the same preprocessing as ``mnist-cnn predict`` (``preprocess.to_mnist``). Images
that cannot be read, or hold no ink, are skipped with a warning and counted. ``mnist-cnn train --data
my_digits`` and ``mnist-cnn evaluate --data my_digits`` read folders through this module.

Splits: in each label, the files are sorted by path and every 5th (the 5th, 10th, …) is held out as
"test"; "train" is the rest and "all" is everything. So a fine-tuning run is scored on digits it never
trained on, and adding files only moves the files after them. A folder with fewer than 5 images in every
label has nothing to hold out: then "test" is the same images as "train" (with a warning).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_cnn import MnistCnnError
from mnist_cnn.preprocess import IMAGE_SUFFIXES

LABEL_PREFIX = re.compile(r"^([0-9])_")
HOLD_OUT_EVERY = 5  # every 5th image of a label is the test split (20 %)
SPLITS = ("train", "test", "all")


@dataclass
class FolderData:
    images: np.ndarray  # (N,28,28) uint8, ink bright on dark, like MNIST
    labels: np.ndarray  # (N,) int64
    paths: list[Path]  # the file each image came from
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def labelled_files(folder: Path) -> list[tuple[Path, int]]:
    """(path, label) of every image in ``folder``, sorted by label then path; unlabelled files warned."""
    found: list[tuple[Path, int]] = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and re.fullmatch(r"[0-9]", path.name):
            found += [(p, int(path.name)) for p in sorted(path.rglob("*"))
                      if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES]  # a FIFO too: warned when read
        elif not path.is_dir() and path.suffix.lower() in IMAGE_SUFFIXES:
            m = LABEL_PREFIX.match(path.name)
            if m:
                found.append((path, int(m.group(1))))
            else:
                _warn(f"{path}: no label (name it <digit>_….png or put it in a folder named 0-9); ignored")
    return sorted(found, key=lambda item: (item[1], str(item[0])))


def choose_split(files: list[tuple[Path, int]], split: str) -> list[tuple[Path, int]]:
    """The files of ``split``: every HOLD_OUT_EVERY-th image of each label is "test"."""
    if split == "all":
        return files
    rank_in_label: dict[int, int] = {}
    test, train = [], []
    for path, label in files:
        rank_in_label[label] = rank_in_label.get(label, 0) + 1
        (test if rank_in_label[label] % HOLD_OUT_EVERY == 0 else train).append((path, label))
    if not test:  # too few images to hold any out: score on the training images, and say so
        _warn(f"fewer than {HOLD_OUT_EVERY} images per label: the test split is the training images")
        return files
    return test if split == "test" else train


def read_image_folder(folder: str | Path, split: str = "all") -> FolderData:
    """Read and preprocess the labelled images of ``split`` ("train", "test" or "all") in ``folder``."""
    from mnist_cnn.preprocess import to_mnist

    folder = Path(folder)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not folder.is_dir():
        raise MnistCnnError(f"image folder not found: {folder}")
    files = labelled_files(folder)
    if not files:
        raise MnistCnnError(f"no labelled images in {folder}: expected subfolders named 0-9 or files named "
                            f"<digit>_name.png ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images, labels, paths, skipped = [], [], [], []
    for path, label in choose_split(files, split):
        try:
            digits = to_mnist(path)  # (k,28,28) floats in [0,1], ink bright
        except MnistCnnError as e:
            skipped.append((path, str(e)))
            _warn(f"skipped {e}")
            continue
        if len(digits) == 0:
            skipped.append((path, "no ink found"))
            _warn(f"skipped {path}: no ink found (blank image?)")
            continue
        if len(digits) > 1:
            _warn(f"{path} holds {len(digits)} digits; using the leftmost as a {label}")
        images.append(np.round(digits[0] * 255).astype(np.uint8))
        labels.append(label)
        paths.append(path)
    if skipped:
        _warn(f"skipped {len(skipped)} of {len(skipped) + len(images)} images in {folder} ({split} split)")
    if not images:
        raise MnistCnnError(f"none of the {len(skipped)} labelled images in {folder} ({split} split) could be used")
    return FolderData(np.stack(images), np.asarray(labels, np.int64), paths, skipped)


def load_image_folder(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,28,28) uint8, labels (N,) int64) of ``split``; what ``data.load_digits`` calls."""
    data = read_image_folder(folder, split)
    return data.images, data.labels
