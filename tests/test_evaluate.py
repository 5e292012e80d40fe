"""Evaluation reports, labelled image folders and fine-tuning on them: real runs, counts checked by hand.

Run: ``PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_evaluate.py``
"""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from mnist_cnn import MnistCnnError
from mnist_cnn.checkpoint import FORMAT_VERSION, load_checkpoint
from mnist_cnn.cli import main
from mnist_cnn.config import TrainConfig
from mnist_cnn.data import load_digits, load_mnist
from mnist_cnn.evaluate import evaluate
from mnist_cnn.folder_data import read_image_folder
from mnist_cnn.model import build_model
from mnist_cnn.train import load_split


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``mnist-cnn ARGS`` in this process (the main() the console script calls): (status, stdout, stderr)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def hand_count(truth, predicted) -> np.ndarray:
    """The confusion matrix counted one image at a time, independently of evaluate.py's bincount."""
    counts = Counter(zip((int(t) for t in truth), (int(p) for p in predicted)))
    return np.array([[counts[(t, p)] for p in range(10)] for t in range(10)])


class ImageTags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self.rows += tag == "tr"


def assert_png(path: Path, min_size: tuple[int, int]) -> None:
    """A real picture: at least this large, and far from blank (many distinct colours)."""
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= min_size[0] and img.height >= min_size[1], img.size
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 50


# ---------------------------------------------------------------- the MNIST report
def test_report_on_mnist_matches_a_hand_count(trained_run, tmp_path, capsys):
    """The five files exist and are real; the confusion matrix equals one counted from torch's own predictions."""
    out = tmp_path / "report"
    status, stdout, stderr = cli(capsys, "evaluate", "--checkpoint", str(trained_run), "--out", str(out),
                                 "--engine", "torch", "--limit", "3000")
    assert status == 0, stderr
    assert stdout.startswith("accuracy 0.9") and f"report: {out / 'report.html'}" in stdout
    report = json.loads((out / "report.json").read_text())

    ckpt = load_checkpoint(trained_run / "checkpoints" / "best.pt")
    model = build_model(ckpt["model_name"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    images, labels = load_mnist("test", limit=3000)
    with torch.inference_mode():
        predicted = model(torch.tensor(images).float().div(255).unsqueeze(1)).argmax(1).numpy()
    expected = hand_count(labels, predicted)
    assert report["confusion_matrix"] == expected.tolist()
    assert report["images"] == 3000 and report["errors"] == int((predicted != labels).sum())
    assert report["accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-6)
    for c in report["per_class"]:
        d = c["digit"]
        assert c["precision"] == pytest.approx(expected[d, d] / expected[:, d].sum(), abs=1e-6)
        assert c["recall"] == pytest.approx(expected[d, d] / expected[d].sum(), abs=1e-6)
    off = expected - np.diag(np.diag(expected))
    top = report["top_confusions"][0]
    assert top["count"] == off.max() and off[top["truth"], top["predicted"]] == off.max()
    confidences = [m["confidence"] for m in report["mistakes"]]
    assert confidences == sorted(confidences, reverse=True) and len(confidences) == min(report["errors"], 200)

    assert report["files"] == ["confusion.png", "mistakes.png", "history.png", "report.json", "report.html"]
    assert_png(out / "confusion.png", (700, 600))
    assert_png(out / "mistakes.png", (900, 300))
    assert_png(out / "history.png", (900, 350))
    page = ImageTags()
    page.feed((out / "report.html").read_text())
    assert len(page.srcs) == 3 and all(s.startswith("data:image/png;base64,") and len(s) > 20_000 for s in page.srcs)
    assert page.rows >= 1 + 10 + 1  # header + 10 digits + macro average


def test_constant_model_confusion_is_exact(tmp_path):
    """A model that always answers 3: column 3 holds every image, counted by hand from the labels."""
    model = build_model("tutorial")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fc2.bias[3] = 5.0  # logits (0,…,5,…,0): always 3, with softmax e^5/(e^5+9)
    ckpt = tmp_path / "always3.pt"
    torch.save({"format_version": FORMAT_VERSION, "model_name": "tutorial", "model": model.state_dict(),
                "step": 0, "best_acc": 0.0}, ckpt)
    report = evaluate(ckpt, limit=500, out=tmp_path / "report", engine="torch")
    labels = load_mnist("test", limit=500)[1]
    per_digit = Counter(int(y) for y in labels)
    expected = np.zeros((10, 10), int)
    for digit, n in per_digit.items():
        expected[digit, 3] = n
    assert report["confusion_matrix"] == expected.tolist()
    assert report["accuracy"] == pytest.approx(per_digit[3] / 500)
    three = report["per_class"][3]
    assert (three["recall"], three["precision"]) == (1.0, pytest.approx(per_digit[3] / 500, abs=1e-6))
    assert all(c["precision"] == c["recall"] == c["f1"] == 0.0 for c in report["per_class"] if c["digit"] != 3)
    assert report["mistakes"][0]["confidence"] == pytest.approx(np.exp(5) / (np.exp(5) + 9), abs=1e-5)
    assert "history.png" not in report["files"] and not (tmp_path / "report" / "history.png").exists()
    assert_png(tmp_path / "report" / "confusion.png", (700, 600))


def test_evaluate_errors_are_one_line(trained_run, tmp_path, capsys):
    cases = {("--checkpoint", str(tmp_path / "nothing")): "no model at",
             ("--checkpoint", str(trained_run), "--data", str(tmp_path / "no-such")): "data not found",
             ("--checkpoint", str(trained_run), "--split", "all"): "--split all is for folders"}
    for args, message in cases.items():
        status, _, err = cli(capsys, "evaluate", *args, "--out", str(tmp_path / "r"))
        assert status == 2 and err.startswith("error: ") and message in err, err
        assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- labelled image folders
@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """MNIST test digits saved as PNG files in both layouts, half of them dark-on-light like a scan, plus a
    broken file, a blank image, an unlabelled image and a text file. Returns (folder, {name: original})."""
    folder = tmp_path_factory.mktemp("digits")
    images, labels = load_mnist("test", limit=400)
    originals: dict[str, np.ndarray] = {}
    for digit in range(10):
        (folder / str(digit)).mkdir()
        for j, i in enumerate(np.flatnonzero(labels == digit)[:6]):
            name = f"{digit}/img{j}.png" if j < 5 else f"{digit}_loose.png"  # both layouts
            Image.fromarray(255 - images[i] if j % 2 else images[i]).save(folder / name)
            originals[name] = images[i]
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # unreadable
    Image.new("L", (40, 40), 255).save(folder / "5_blank.png")  # no ink
    Image.fromarray(images[0]).save(folder / "photo.png")  # no label: warned, not read
    (folder / "notes.txt").write_text("not an image")
    return folder, originals


def test_folder_reader_reads_both_layouts_and_skips_bad_images(digit_folder, capsys):
    folder, originals = digit_folder
    data = read_image_folder(folder, "all")
    err = capsys.readouterr().err
    assert data.images.shape == (60, 28, 28) and data.images.dtype == np.uint8
    assert Counter(data.labels.tolist()) == {d: 6 for d in range(10)}
    assert sorted(p.name for p, _ in data.skipped) == ["5_blank.png", "broken.png"]
    assert "warning: skipped" in err and "no ink found" in err and "skipped 2 of 62 images" in err
    assert "photo.png: no label" in err and "notes.txt" not in err
    for image, label, path in zip(data.images, data.labels, data.paths):
        name = path.relative_to(folder).as_posix()
        assert label == int(name[0])
        # MNIST digits, dark-on-light or not, come out of the preprocessing close to the original
        a, b = image.astype(float).ravel(), originals[name].astype(float).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.8, name


def test_folder_splits_hold_out_every_fifth_image(digit_folder):
    folder, _ = digit_folder
    train, test = read_image_folder(folder, "train"), read_image_folder(folder, "test")
    assert len(test.paths) == 10 and len(train.paths) == 50  # 6 per digit: the 5th of each is held out
    assert set(train.paths).isdisjoint(test.paths)
    assert set(train.paths) | set(test.paths) == set(read_image_folder(folder, "all").paths)
    images, labels = load_digits(folder, "train")  # what `mnist-cnn train --data FOLDER` reads
    assert len(images) == 50 and labels.dtype == np.int64


def test_folder_without_usable_images_is_an_error(tmp_path):
    with pytest.raises(MnistCnnError, match="no labelled images"):
        read_image_folder(tmp_path)
    (tmp_path / "4_bad.png").write_bytes(b"junk")
    with pytest.raises(MnistCnnError, match="none of the 1 labelled images"):
        read_image_folder(tmp_path)


def test_report_on_a_folder_names_files_and_skips(trained_run, digit_folder, tmp_path, capsys):
    folder, _ = digit_folder
    status, stdout, stderr = cli(capsys, "evaluate", "--checkpoint", str(trained_run), "--data", str(folder),
                                 "--out", str(tmp_path / "r"))
    assert status == 0, stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["images"] == 60 and len(report["skipped"]) == 2
    assert all(Path(m["source"]).is_file() for m in report["mistakes"])
    assert report["accuracy"] > 0.8  # MNIST digits through the same preprocessing as predict
    assert "Skipped images (2)" in (tmp_path / "r" / "report.html").read_text()


# ---------------------------------------------------------------- fine-tuning on your own digits
def font_digits(folder: Path, per_digit: int = 8) -> Path:
    """Printed digits (Pillow's bundled font), slightly rotated, dark on white: "handwriting" MNIST lacks."""
    font = ImageFont.load_default(size=44)
    for d in range(10):
        (folder / str(d)).mkdir(parents=True)
        for i in range(per_digit):
            img = Image.new("L", (64, 64), 255)
            ImageDraw.Draw(img).text((32, 32), str(d), font=font, fill=0, anchor="mm", stroke_width=i % 3)
            img.rotate((i - per_digit / 2) * 3, fillcolor=255).save(folder / str(d) / f"font_{i}.png")
    return folder


def test_fine_tune_on_a_folder(trained_run, tmp_path, capsys):
    """train --resume best.pt --data FOLDER --mix-mnist N: starts from the weights, learns the new digits."""
    folder = font_digits(tmp_path / "mine")
    cfg = TrainConfig(data=str(folder), mix_mnist=128)
    assert len(load_split(cfg, "train", torch.device("cpu"))) == 70 + 128  # 8 per digit, the 5th held out
    base = evaluate(trained_run, data=str(folder), split="test", out=tmp_path / "before", engine="torch")
    best = trained_run / "checkpoints" / "best.pt"
    status, stdout, stderr = cli(capsys, "train", "--resume", str(best), "--data", str(folder), "--mix-mnist", "128",
                                 "--run-dir", str(tmp_path / "run"), "--epochs", "2", "--batch-size", "16",
                                 "--lr", "1e-3", "--no-export-onnx")
    assert status == 0, stderr
    assert f"resumed from {best}" in stderr
    after = evaluate(tmp_path / "run", data=str(folder), split="test", engine="torch")
    print(f"held-out printed digits: {base['accuracy']:.2f} before fine-tuning, {after['accuracy']:.2f} after")
    assert after["accuracy"] >= 0.9 and after["accuracy"] > base["accuracy"]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert [row["epoch"] for row in ckpt["history"]] == [1, 2]  # a fresh schedule, not the base run's
    assert (tmp_path / "run" / "report" / "history.png").is_file()
