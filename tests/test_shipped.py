"""The models shipped in the package, and how --checkpoint names them: resolve.py and engine.py's checks.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_shipped.py
"""

from __future__ import annotations

import shutil

import pytest

from conftest import SAMPLES, flip_weight_byte, run_cli
from mnist_cnn import MnistCnnError
from mnist_cnn.data import sha256
from mnist_cnn.engine import OnnxEngine, read_onnx
from mnist_cnn.predict import Predictor
from mnist_cnn.resolve import best_shipped, provenance, resolve, shipped

NAMES = sorted(shipped())


def test_a_model_is_shipped_with_its_provenance():
    assert NAMES, "no model in mnist_cnn/models/"
    for name in NAMES:
        record = provenance(name)
        for key in ("command", "seed", "commit", "training_data_sha256", "temperature", "reject_energy"):
            assert record.get(key) not in (None, "", {}), (name, key)
        assert set(record["accuracy"]) >= {"mnist_test", "semeion", "user_like"}


@pytest.mark.parametrize("name", NAMES)
def test_shipped_files_match_their_provenance(name):
    path, record = shipped()[name], provenance(name)
    assert record["onnx"]["file"] == path.name and sha256(path) == record["onnx"]["sha256"]
    meta, _ = read_onnx(path)  # the graph matches the SHA-256 export recorded inside the file
    assert meta["payload_sha256"] and float(meta["temperature"]) == pytest.approx(record["temperature"])
    assert sum(p.stat().st_size for p in shipped().values()) <= 10 * 2**20


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_reads_the_samples(name):
    predictor = Predictor.from_checkpoint(name)
    assert predictor.engine.name == "onnx"
    for image in sorted(SAMPLES.glob("*.png")):
        assert predictor.predict_file(image).number == image.name[0], image.name


def test_altered_weights_are_refused_in_one_line(tmp_path):
    altered = tmp_path / "altered.onnx"
    shutil.copy(shipped()[NAMES[0]], altered)
    flip_weight_byte(altered)
    with pytest.raises(MnistCnnError, match="do not match the SHA-256"):
        OnnxEngine(altered)
    result = run_cli("predict", "--checkpoint", str(altered), str(SAMPLES / "7_mnist_test_0017.png"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "do not match the SHA-256" in lines[0], result.stderr


def test_without_checkpoint_the_best_shipped_model_is_used_and_named(tmp_path):
    result = run_cli("predict", "--json", str(SAMPLES / "3_mnist_test_0030.png"), cwd=tmp_path)  # no runs/ here
    assert result.returncode == 0, result.stderr
    assert f"using the shipped model {best_shipped()!r}" in result.stderr
    assert '"number": "3"' in result.stdout


def test_without_checkpoint_your_own_run_comes_first(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "runs" / "mnist")
    result = run_cli("predict", str(SAMPLES / "5_mnist_test_0015.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == ["using your run runs/mnist (--checkpoint picks another model)"]
    listed = run_cli("models", cwd=tmp_path)
    assert listed.returncode == 0 and "runs/mnist" in listed.stdout
    assert all(name in listed.stdout for name in NAMES)


@pytest.mark.parametrize("where, message", [
    ("no-such-model", "no model at no-such-model: not a file, a folder or a shipped model name"),
])
def test_unknown_names_are_one_line_errors(where, message):
    with pytest.raises(MnistCnnError, match=message):
        resolve(where)
    result = run_cli("evaluate", "--checkpoint", where)
    assert result.returncode == 2 and result.stderr.strip() == f"error: {message} ({', '.join(NAMES)})"


def test_a_shipped_model_has_no_torch_engine():
    with pytest.raises(MnistCnnError, match="is an ONNX model"):
        Predictor.from_checkpoint(NAMES[0], engine="torch")
