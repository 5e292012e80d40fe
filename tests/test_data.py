"""MNIST loading: checksums, clear errors for missing/truncated/altered files, other formats."""

import gzip
import shutil

import numpy as np
import pytest

from mnist_cnn import MnistCnnError
from mnist_cnn.data import BUNDLED, load_digits, load_mnist, read_idx


@pytest.fixture
def mnist_copy(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(BUNDLED, folder)
    return folder


def test_bundled_sets_have_the_canonical_sizes():
    x, y = load_mnist("train")
    assert x.shape == (60_000, 28, 28) and x.dtype == np.uint8 and y.shape == (60_000,)
    xt, yt = load_mnist("test")
    assert xt.shape == (10_000, 28, 28) and sorted(set(yt.tolist())) == list(range(10))
    assert load_mnist("test", limit=5)[0].shape == (5, 28, 28)


def test_altered_file_is_named(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(MnistCnnError, match="t10k-labels-idx1-ubyte.gz.*(damaged|altered)"):
        load_digits(mnist_copy, "test")


def test_truncated_file_without_sums_is_named(mnist_copy):
    (mnist_copy / "SHA256SUMS").unlink()
    path = mnist_copy / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MnistCnnError, match="t10k-images-idx3-ubyte.gz"):
        load_digits(mnist_copy, "test")


def test_missing_file_is_named(mnist_copy):
    (mnist_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MnistCnnError, match="not found.*train-labels"):
        load_digits(mnist_copy, "train")


def test_uncompressed_idx_folder(tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(BUNDLED / f"{name}.gz") as f:
            (tmp_path / name).write_bytes(f.read())
    x, y = load_digits(tmp_path, "test")
    xb, yb = load_mnist("test")
    assert np.array_equal(x, xb) and np.array_equal(y, yb)


def test_keras_npz(tmp_path):
    x, y = load_mnist("test", limit=100)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    xs, ys = load_digits(tmp_path / "mnist.npz", "test")
    assert np.array_equal(xs, x[:10]) and np.array_equal(ys, y[:10])
    np.savez(tmp_path / "bad.npz", x_train=x)
    with pytest.raises(MnistCnnError, match="x_test"):
        load_digits(tmp_path / "bad.npz", "test")


def test_not_an_idx_file(tmp_path):
    (tmp_path / "junk-idx3-ubyte").write_bytes(b"\x00\x00\x09\x99" + bytes(100))
    with pytest.raises(MnistCnnError, match="not an MNIST IDX file"):
        read_idx(tmp_path / "junk-idx3-ubyte")
