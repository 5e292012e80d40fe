"""Files a careless or hostile user hands over: each is one line on stderr, never a hang, a traceback or a
whole run lost (predict, evaluate --data, train --data)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES, run_cli
from mnist_cnn.folder_data import read_image_folder
from mnist_cnn.predict import IMAGE_SUFFIXES as PREDICT_SUFFIXES
from mnist_cnn.predict import expand_inputs

DIGIT = Image.open(SAMPLES / "7_mnist_test_0017.png").convert("L")


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def nan_tiff() -> bytes:
    a = np.where(np.asarray(DIGIT) > 128, np.nan, 0.0).astype(np.float32)  # ink pixels NaN
    return encoded(Image.fromarray(a, "F"), "TIFF")


def truncated_jpeg() -> bytes:
    return encoded(DIGIT.resize((280, 280)), "JPEG")[:300]  # cut inside the header's tables


def test_special_files_are_one_line_errors(trained_run, tmp_path):
    """A FIFO named like an image (alone and in a folder), /dev/zero and a symlink loop: no hang, no endless read."""
    fifo_dir = tmp_path / "folder"
    fifo_dir.mkdir()
    os.mkfifo(tmp_path / "a.png")
    os.mkfifo(fifo_dir / "b.png")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    args = [str(tmp_path / "a.png"), str(fifo_dir), "/dev/zero", str(tmp_path / "loop.png")]
    r = run_cli("predict", "--checkpoint", str(trained_run), *args, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors[:4] == [f"error: {tmp_path / 'a.png'}: not a regular file (a pipe, device or socket)",
                          f"error: {fifo_dir / 'b.png'}: not a regular file (a pipe, device or socket)",
                          "error: /dev/zero: not a regular file (a pipe, device or socket)",
                          f"error: {tmp_path / 'loop.png'}: Too many levels of symbolic links"]


def test_nan_tiff_and_truncated_jpeg_are_clear_errors_in_predict(trained_run, tmp_path):
    (tmp_path / "nan.tif").write_bytes(nan_tiff())
    (tmp_path / "cut.jpg").write_bytes(truncated_jpeg())
    r = run_cli("predict", "--checkpoint", str(trained_run), str(tmp_path / "nan.tif"), str(tmp_path / "cut.jpg"),
                timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"error: {tmp_path / 'nan.tif'}: NaN or infinite pixel values" in r.stderr
    assert f"error: {tmp_path / 'cut.jpg'}: unreadable image header" in r.stderr


def labelled_folder(root):
    """Three good digits (one in a suffix only predict used to read), a NaN TIFF, a truncated JPEG and a FIFO."""
    (root / "7").mkdir(parents=True)
    DIGIT.save(root / "7" / "a.png")
    DIGIT.save(root / "7" / "b.bmp")
    (root / "7" / "c.pgm").write_bytes(encoded(DIGIT, "PPM"))
    (root / "7" / "nan.tif").write_bytes(nan_tiff())
    (root / "7" / "cut.jpg").write_bytes(truncated_jpeg())
    os.mkfifo(root / "7" / "pipe.png")
    return root


def test_folder_reader_skips_bad_files_and_reads_every_suffix_predict_reads(tmp_path, capsys):
    data = read_image_folder(labelled_folder(tmp_path / "digits"))
    assert sorted(p.name for p in data.paths) == ["a.png", "b.bmp", "c.pgm"]
    assert sorted(p.name for p, _ in data.skipped) == ["cut.jpg", "nan.tif", "pipe.png"]
    assert "warning: skipped 3 of 6 images" in capsys.readouterr().err


def test_one_suffix_list_for_predict_and_the_folder_reader(tmp_path):
    from mnist_cnn import folder_data

    assert folder_data.IMAGE_SUFFIXES is PREDICT_SUFFIXES
    for suffix in sorted(PREDICT_SUFFIXES):
        (tmp_path / f"3_x{suffix}").write_bytes(b"")
    found = {p.suffix for p, _ in folder_data.labelled_files(tmp_path)}
    assert found == {p.suffix for p in map(lambda s: tmp_path / f"3_x{s}", PREDICT_SUFFIXES)}
    assert {os.path.splitext(p)[1] for p, _ in expand_inputs([str(tmp_path)])} == found


def test_evaluate_data_survives_bad_files(trained_run, tmp_path):
    folder = labelled_folder(tmp_path / "digits")
    r = run_cli("evaluate", "--checkpoint", str(trained_run), "--data", str(folder), "--out", str(tmp_path / "rep"),
                timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "on 3 images" in r.stdout and "skipped 3 of 6 images" in r.stderr


@pytest.mark.parametrize("bad", ["nan.tif", "cut.jpg"])
def test_train_data_survives_a_bad_file(tmp_path, bad):
    folder = tmp_path / "digits"
    for label in (1, 7):
        (folder / str(label)).mkdir(parents=True)
        for i in range(3):
            DIGIT.rotate(90 * (label == 1) + i).save(folder / str(label) / f"{i}.png")
    (folder / "7" / bad).write_bytes(nan_tiff() if bad == "nan.tif" else truncated_jpeg())
    r = run_cli("train", "--data", str(folder), "--run-dir", str(tmp_path / "run"), "--epochs", "1", "--holdout", "0",
                "--no-export-onnx", "--device", "cpu", timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"skipped {folder / '7' / bad}" in r.stderr


def test_a_model_with_nan_weights_is_refused_not_printed_as_nan(trained_run, tmp_path):
    """predict said "0 (confidence nan)", verdict ok, and --json printed bare NaN (invalid JSON)."""
    from mnist_cnn.checkpoint import checkpoint_bytes, load_checkpoint

    ckpt = load_checkpoint(trained_run / "checkpoints" / "best.pt")
    ckpt["model"]["fc2.bias"][3] = float("nan")
    state = {k: v for k, v in ckpt.items() if k not in ("format_version", "payload_sha256")}
    (tmp_path / "nan.pt").write_bytes(checkpoint_bytes(state))
    r = run_cli("predict", "--checkpoint", str(tmp_path / "nan.pt"), "--json", str(SAMPLES / "7_mnist_test_0017.png"),
                timeout=120)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.strip() == (f"error: the model in {tmp_path / 'nan.pt'} gives NaN or infinite outputs: its "
                                f"weights are damaged (NaN/inf); retrain it or use another checkpoint")
