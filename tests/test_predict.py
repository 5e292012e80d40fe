"""Predictions as a user gets them: calibrated confidence, "no digit" / "unsure", many files at once.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_predict.py
"""

from __future__ import annotations

import csv
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import SAMPLES, run_cli
from mnist_cnn.calibrate import (MAX_CORE_PIXELS, MAX_STROKE_RADIUS, REJECT_RATE, energy,
                                 expected_calibration_error, fit_energy_threshold, fit_temperature, is_filled,
                                 nll, softmax, thick_ink)
from mnist_cnn.data import load_mnist
from mnist_cnn.predict import (NO_DIGIT, NOT_A_STROKE, OK, SHIFTS, STEADY_BELOW, UNSURE, Predictor, expand_inputs,
                               shifted)


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor.from_checkpoint(trained_run, engine="torch")  # torch reads the checkpoint's own keys


def number_image(digits: list[np.ndarray]) -> Image.Image:
    """MNIST digits (ink bright) side by side on white paper, as a user's drawing of a number."""
    canvas = np.zeros((48, 36 * len(digits) + 12), np.uint8)
    for i, d in enumerate(digits):
        canvas[10:38, 10 + 36 * i:38 + 36 * i] = d
    return Image.fromarray(255 - canvas).resize((canvas.shape[1] * 3, canvas.shape[0] * 3), Image.LANCZOS)


# ---------------------------------------------------------------- calibration (numpy, against known answers)
def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (20_000, 10))
    probs = softmax(logits, 2.5)  # labels drawn as if the true temperature were 2.5
    labels = (probs.cumsum(1) > rng.random((len(probs), 1))).argmax(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_fit_temperature_finds_scipys_minimum():
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(2)
    for true_t in (0.3, 1.0, 8.0):
        logits = rng.normal(0, 3, (3_000, 10))
        labels = (softmax(logits, true_t).cumsum(1) > rng.random((3_000, 1))).argmax(1)
        ref = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), method="bounded",
                              bounds=(np.log(0.05), np.log(20.0)), options={"xatol": 1e-6})
        assert fit_temperature(logits, labels) == pytest.approx(float(np.exp(ref.x)), rel=1e-3)


def test_energy_is_minus_logsumexp_and_the_line_rejects_the_held_out_rate():
    from scipy.special import logsumexp

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (5_000, 10)) + 12 * np.eye(10)[rng.integers(0, 10, 5_000)]  # confident "digits"
    assert np.allclose(energy(logits), -logsumexp(logits, axis=1))
    line = fit_energy_threshold(logits, temperature=1.0)
    unsure = (energy(logits) > line) | (softmax(logits).max(1) < 0.5)
    assert abs(unsure.mean() - REJECT_RATE) <= 1 / len(logits)
    assert fit_energy_threshold(logits[:50]) is None  # too few held-out digits: no line, confidence only


# ---------------------------------------------------------------- the trained model
def test_temperature_is_applied_and_calibrates(trained_run, predictor):
    import torch

    ckpt = torch.load(sorted((trained_run / "checkpoints").glob("best.pt"))[0], weights_only=True)
    assert predictor.temperature == pytest.approx(ckpt["temperature"]) and predictor.temperature != 1.0
    assert predictor.reject_energy == pytest.approx(ckpt["reject_energy"])
    images, labels = load_mnist("test")
    x = images[:3000].astype(np.float32) / 255
    logits = predictor.engine.logits(x)
    probs = predictor.predict_arrays(x)  # the network alone
    assert np.allclose(probs, softmax(logits, ckpt["temperature"]), atol=1e-6)
    read = predictor.assess(x)[0]  # what predict reports: hesitant digits averaged with their 1-px shifts
    sure = probs.max(1) >= STEADY_BELOW
    assert sure.any() and (~sure).any() and np.allclose(read[sure], probs[sure], atol=1e-6)
    hesitant = np.flatnonzero(~sure)[:5]
    more = predictor.engine.logits(shifted(x[hesitant])).reshape(len(SHIFTS), len(hesitant), -1)
    steadied = softmax((logits[hesitant] + more.sum(0)) / (len(SHIFTS) + 1), ckpt["temperature"])
    assert np.allclose(read[hesitant], steadied, atol=1e-6) and not np.allclose(read[hesitant], probs[hesitant])
    assert not np.allclose(probs, softmax(logits), atol=1e-3)  # the raw softmax is a different answer
    raw_ece = expected_calibration_error(softmax(logits), labels[:3000])
    assert expected_calibration_error(probs, labels[:3000]) <= raw_ece + 0.003


def test_samples_are_read_right_and_accepted(predictor):
    for path in sorted(SAMPLES.glob("*.png")):
        pred = predictor.predict_file(path)
        assert (pred.number, pred.verdict) == (path.name[0], OK), (path.name, pred.to_dict())
        assert pred.to_dict()["status"] == [OK] and 0.5 <= pred.confidence[0] <= 1


def test_blank_and_uniform_images_are_no_digit(predictor):
    for colour in (255, 0, 128):
        pred = predictor.predict_image(Image.new("L", (120, 90), colour), source="blank")
        assert pred.verdict == NO_DIGIT and pred.digits == [] and pred.to_dict()["number"] == ""


@pytest.mark.parametrize("shape", ["square", "disc", "triangle"])
def test_filled_shapes_are_not_digits(predictor, shape):
    """A filled shape gets a confident softmax from the network: the energy test is what catches it."""
    img = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(img)
    {"square": lambda: draw.rectangle([40, 50, 160, 150], fill=0),
     "disc": lambda: draw.ellipse([40, 40, 160, 160], fill=0),
     "triangle": lambda: draw.polygon([(100, 30), (170, 170), (30, 170)], fill=0)}[shape]()
    pred = predictor.predict_image(img, source=shape)
    assert pred.verdict in (UNSURE, NO_DIGIT), pred.to_dict()


def test_filled_shape_thresholds_are_properties_of_the_mnist_format():
    """calibrate's stroke limits, recomputed from the 60,000 training digits, as its docstring states."""
    radius, core = thick_ink(load_mnist("train")[0] / 255.0)
    assert np.mean(radius > MAX_STROKE_RADIUS) <= 0.0005 and np.mean(core > MAX_CORE_PIXELS) <= 0.001
    test_digits = load_mnist("test")[0] / 255.0
    assert np.mean(is_filled(test_digits)) <= 0.0015  # what the test also leaves to the energy line


def test_a_filled_thumbnail_is_unsure_with_the_reason(predictor):
    img = np.zeros((28, 28), np.uint8)
    cv2.fillPoly(img, [np.array([(3, 4), (10, 1), (17, 1), (24, 4), (27, 10), (22, 11), (21, 27), (6, 27),
                                 (5, 11), (0, 10)])], 230)  # a T-shirt, as in Fashion-MNIST
    pred = predictor.predict_image(Image.fromarray(img), source="shirt")
    assert pred.verdict == UNSURE and pred.reasons == [NOT_A_STROKE]


def test_multi_digit_prediction_and_single(predictor):
    images, labels = load_mnist("test")
    img = number_image([images[i] for i in (1, 2, 3)])
    many, one = predictor.predict_image(img), predictor.predict_image(img, single=True)
    assert len(many.digits) == 3 and len(many.probabilities) == 3 and len(many.to_dict()["status"]) == 3
    assert len(one.digits) == 1


# ---------------------------------------------------------------- many files
def test_expand_inputs_folders_globs_and_problems(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for name in ("a/1.png", "a/deep/2.JPG", "a/notes.txt", "a/.x.png", "a/.hidden/3.png", "b.png"):
        (tmp_path / name).write_bytes(b"")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*.png"), str(tmp_path / "a" / "1.png"),
                         str(tmp_path / "z*.png"), str(tmp_path / "empty")])
    paths = [p for p, problem in got if problem is None]
    assert paths == [str(tmp_path / "a/1.png"), str(tmp_path / "a/deep/2.JPG"), str(tmp_path / "b.png"),
                     str(tmp_path / "empty")]  # a missing plain name is reported when read, in its turn
    problems = [problem for _, problem in got if problem]
    assert len(problems) == 1 and "no files match" in problems[0]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A folder of the samples, a blank page, a filled square, a text file named .png; and a number."""
    folder = tmp_path_factory.mktemp("batch")
    for p in sorted(SAMPLES.glob("*.png"))[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    Image.new("L", (64, 64), 255).save(folder / "blank.png")
    (folder / "broken.png").write_text("this is not an image")
    images, _ = load_mnist("test")
    number_image([images[i] for i in (1, 2, 3)]).save(folder.parent / "number.png")
    return folder


def test_cli_folder_glob_and_a_bad_file(trained_run, batch, tmp_path):
    glob_arg = str(batch / "[0-1]_*.png")  # quoted: the CLI expands it, and dedupes what the folder gave
    result = run_cli("predict", "--checkpoint", str(trained_run), str(batch), glob_arg, str(batch.parent / "number.png"),
                     "--save-preprocessed", str(tmp_path / "seen"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "broken.png" in errors[0] and "1 of 7 images" in errors[1]
    for p in sorted(SAMPLES.glob("*.png"))[:4]:
        assert f"{p.name}\n  probabilities: " in result.stdout and f"predicted digit: {p.name[0]}" in result.stdout
    assert "blank.png\n  no digit found" in result.stdout
    assert "number: " in result.stdout and "digit 3:" in result.stdout  # the number, then each digit
    seen = sorted(f.name for f in (tmp_path / "seen").iterdir())
    assert seen == sorted([f"{p.stem}_0.png" for p in sorted(SAMPLES.glob("*.png"))[:4]]
                          + ["number_0.png", "number_1.png", "number_2.png"])
    saved = np.asarray(Image.open(tmp_path / "seen" / seen[0]))
    assert saved.shape == (28, 28) and saved.max() > 200 and saved[0].max() == 0  # ink bright on black


def test_cli_json_and_csv_parse(trained_run, batch):
    args = ["predict", "--checkpoint", str(trained_run), str(batch)]
    result = run_cli(*args, "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1 and len(rows) == 6
    by_name = {r["source"].rsplit("/", 1)[-1]: r for r in rows}
    assert "error" in by_name["broken.png"] and by_name["blank.png"]["verdict"] == NO_DIGIT
    for p in sorted(SAMPLES.glob("*.png"))[:4]:
        r = by_name[p.name]
        assert r["number"] == p.name[0] and r["verdict"] == OK and len(r["probabilities"][0]) == 10
    result = run_cli(*args, "--csv", "--single")
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(table) == 6 and {"source", "number", "verdict", "digit", "p0", "p9", "error"} <= set(table[0])
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in table}
    assert rows["broken.png"]["verdict"] == "error" and rows["broken.png"]["error"]
    for p in sorted(SAMPLES.glob("*.png"))[:4]:
        probs = [float(rows[p.name][f"p{i}"]) for i in range(10)]
        assert abs(sum(probs) - 1) < 1e-4 and rows[p.name]["digit"] == p.name[0]
