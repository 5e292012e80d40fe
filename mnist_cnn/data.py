"""MNIST and other digit sources as uint8 arrays.

``load_mnist("train")`` reads the bundled IDX files in ``data/mnist`` after checking their SHA-256 against
``SHA256SUMS``. ``load_digits(source, split)`` also reads a folder of IDX files (gzipped or not) and the
tutorial's Keras ``mnist.npz``.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from mnist_cnn import MnistCnnError

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksums(folder: Path, names: list[str]) -> None:
    """Check each named file against ``folder/SHA256SUMS``; raise MnistCnnError naming a bad file."""
    sums_file = folder / "SHA256SUMS"
    if not sums_file.is_file():
        raise MnistCnnError(f"{sums_file} is missing: cannot verify the MNIST files")
    expected = dict(reversed(line.split()) for line in sums_file.read_text().splitlines() if line.strip())
    for name in names:
        path = folder / name
        if not path.is_file():
            raise MnistCnnError(f"MNIST file not found: {path}")
        if name in expected and sha256(path) != expected[name]:
            raise MnistCnnError(f"MNIST file {path} is damaged or altered (SHA-256 differs from SHA256SUMS)")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a uint8 array: (N,28,28) images or (N,) labels."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise MnistCnnError(f"MNIST file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise MnistCnnError(f"cannot read {path}: {e}") from None
    if len(raw) < 8:
        raise MnistCnnError(f"{path} is too short to be an IDX file")
    magic, count = int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:8], "big")
    if magic == IMAGES_MAGIC:
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        shape, offset = (count, rows, cols), 16
    elif magic == LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise MnistCnnError(f"{path} is not an MNIST IDX file (magic number {magic})")
    size = int(np.prod(shape))
    if len(raw) - offset != size:
        raise MnistCnnError(f"{path} is truncated or has extra bytes: expected {size} data bytes, "
                            f"found {len(raw) - offset}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise MnistCnnError(f"MNIST file not found: {folder / (stem + '.gz')} (nor an uncompressed {stem})")


def _load_idx_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    paths = [_find_idx(folder, stem) for stem in FILES[split]]
    if folder == BUNDLED or (folder / "SHA256SUMS").is_file():  # the bundled copy must match its sums
        verify_checksums(folder, [p.name for p in paths])
    images, labels = (read_idx(p) for p in paths)
    if len(images) != len(labels):
        raise MnistCnnError(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels")
    return images, labels


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z[f"x_{split}"], z[f"y_{split}"]
    except KeyError as e:
        raise MnistCnnError(f"{path} lacks the Keras key {e}; expected x_train, y_train, x_test, y_test") from None
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError…
        raise MnistCnnError(f"cannot read {path} as a Keras mnist.npz: {e}") from None
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
        raise MnistCnnError(f"{path}: x_{split} must be (N,28,28) with N labels, got {x.shape} and {y.shape}")
    return x.astype(np.uint8), y.astype(np.uint8)


def load_digits(source: str | Path | None, split: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N,28,28) uint8 and labels (N,) int64 from the bundled MNIST, an IDX folder or an npz.

    Args:
        source: folder of IDX files, ``.npz`` file, or None/"" for the bundled, checksum-verified data.
        split: "train" or "test".
        limit: keep only the first N (0: all).
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    path = Path(source) if source else BUNDLED
    if not source and not path.exists():  # an installed package: data/ is part of a source checkout only
        raise MnistCnnError("the bundled MNIST (data/mnist) comes with the source checkout, not with this "
                            "install: pass --data (an MNIST IDX folder, a mnist.npz or labelled images)")
    if not path.exists():
        raise MnistCnnError(f"data not found: {path}")
    if path.is_file() and path.suffix == ".npz":
        images, labels = _load_npz(path, split)
    elif path.is_dir() and any(path.glob("*idx*")):
        images, labels = _load_idx_folder(path, split)
    elif path.is_dir():
        from mnist_cnn.folder_data import load_image_folder  # labelled images: <label>/… or <label>_….png

        images, labels = load_image_folder(path, split)
    else:
        raise MnistCnnError(f"{path} is neither an IDX folder, an .npz file, nor a folder of labelled images")
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels.astype(np.int64)


def load_mnist(split: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The bundled MNIST split, verified against SHA256SUMS."""
    return load_digits(None, split, limit)
