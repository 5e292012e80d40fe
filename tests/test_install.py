"""The reading install: the wheel without its ``train`` extra, in a fresh venv, predicts and serves.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_install.py

Builds the wheel from this tree, installs it into a new venv (pip fetches the base dependencies), and drives
the installed ``mnist-cnn`` as a user would: from a folder with no runs/, so the shipped model answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SAMPLES
from mnist_cnn.predict import Predictor
from mnist_cnn.resolve import best_shipped

sys.path.insert(0, str(ROOT / "bench"))
from common import outside_env, reading_venv  # noqa: E402  (bench/common.py: what bench_install.py measures)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    return reading_venv(tmp_path_factory.mktemp("install"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A photo-like JPEG: an MNIST digit penned on a sheet of paper lying on a table (bench/realistic.py)."""
    import realistic

    digit = 255 - np.asarray(Image.open(SAMPLES / "4_mnist_test_0006.png").convert("L"))  # MNIST: ink bright
    data, ext = realistic.render("paper_photo", [digit], np.random.default_rng(0))
    path = tmp_path_factory.mktemp("photo") / f"photo.{ext}"
    path.write_bytes(data)
    return path


def mnist_cnn(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin/mnist-cnn"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=outside_env())


@pytest.mark.parametrize("module", ["torch", "cv2", "matplotlib"])
def test_the_reading_install_leaves_the_big_packages_out(venv, module):
    probe = subprocess.run([str(venv / "bin/python"), "-c", f"import {module}"], capture_output=True, text=True,
                           env=outside_env())
    assert probe.returncode != 0 and f"No module named '{module}'" in probe.stderr


def test_the_wheel_ships_the_type_hints_marker(venv):
    assert list(venv.glob("lib/python*/site-packages/mnist_cnn/py.typed"))  # PEP 561: type checkers read our hints


def test_the_python_api_reads_a_digit_without_torch(venv, tmp_path):
    code = ("import sys; from mnist_cnn import Predictor; "
            "print(Predictor.from_checkpoint('strong').predict_file(sys.argv[1]).number, 'torch' in sys.modules)")
    r = subprocess.run([str(venv / "bin/python"), "-c", code, str(SAMPLES / "7_mnist_test_0017.png")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120, env=outside_env())
    assert r.returncode == 0 and r.stdout.split() == ["7", "False"], r.stdout + r.stderr


def test_predict_reads_samples_and_a_photo_with_the_shipped_model(venv, photo, tmp_path):
    images = sorted(SAMPLES.glob("*.png")) + [photo]
    result = mnist_cnn(venv, "predict", "--json", *map(str, images), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "using the shipped model" in result.stderr and "Traceback" not in result.stderr
    read = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["number"] for r in read[:-1]] == [p.name[0] for p in images[:-1]]
    reference = Predictor.from_checkpoint(best_shipped()).predict_file(photo)  # the same model, in this tree
    assert read[-1]["number"] == reference.number == "4"
    assert np.allclose(read[-1]["probabilities"], reference.probabilities, atol=1e-5)


def test_train_and_export_say_which_extra_they_need(venv, tmp_path):
    for command in (["train", "--epochs", "1"], ["export"]):
        result = mnist_cnn(venv, *command, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: mnist-cnn ") and "pip install 'mnist-cnn[train]'" in lines[0]


def test_evaluate_needs_data_outside_a_checkout_and_reads_a_labelled_folder_without_pictures(venv, tmp_path):
    result = mnist_cnn(venv, "evaluate", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: the bundled MNIST (data/mnist) comes with the source checkout"), result.stderr
    result = mnist_cnn(venv, "evaluate", "--data", str(SAMPLES), "--out", "report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["images"] == 10 and report["files"] == ["report.json", "report.html"]  # no pictures: no matplotlib
    assert "pip install 'mnist-cnn[report]'" in result.stderr and "Traceback" not in result.stderr


def test_serve_answers_over_http(venv, photo, tmp_path):
    port = free_port()
    # two workers: gunicorn, installed with the package, starts them, whatever the cores here
    server = subprocess.Popen([str(venv / "bin/mnist-cnn"), "serve", "--port", str(port), "--workers", "2"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                              env=outside_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, server)
        for path in (SAMPLES / "9_mnist_test_0009.png", photo):
            r = httpx.post(base + "/api/predict", content=path.read_bytes(), timeout=30,
                           headers={"content-type": "image/jpeg" if path.suffix == ".jpg" else "image/png"})
            assert r.status_code == 200, r.text
            assert r.json()["number"] == Predictor.from_checkpoint(best_shipped()).predict_file(path).number
        assert httpx.get(base + "/api/model").json()["engine"] == "onnx"
    finally:
        os.killpg(server.pid, signal.SIGINT)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0 and "Traceback" not in out.decode(), out.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(base: str, server: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read().decode()
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not up in {seconds} s")
