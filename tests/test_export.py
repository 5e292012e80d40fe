"""ONNX export and the ONNX Runtime engine, against PyTorch as the reference oracle.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_export.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT, SAMPLES, run_cli
from mnist_cnn import MnistCnnError
from mnist_cnn.checkpoint import checkpoint_bytes
from mnist_cnn.data import load_mnist, sha256
from mnist_cnn.export import MnistGraph, export_onnx, unused_border
from mnist_cnn.model import build_model
from mnist_cnn.onnx_engine import OnnxEngine, onnx_for, read_metadata
from mnist_cnn.predict import Predictor, TorchEngine

SEVEN = SAMPLES / "7_mnist_test_0017.png"


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist("test")
    return images.astype(np.float32) / 255.0, labels


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run, so a test may change its files."""
    return shutil.copytree(trained_run, tmp_path / "run")


def test_training_exports_an_in_step_onnx_that_matches_torch(trained_run, test_images):
    onnx_path = onnx_for(trained_run)
    assert onnx_path == trained_run / "model.onnx"
    x, labels = test_images
    onnx_engine, torch_engine = OnnxEngine(onnx_path), TorchEngine(trained_run / "checkpoints" / "best.pt")
    ort_logits, torch_logits = onnx_engine.logits(x), torch_engine.logits(x)
    assert ort_logits.shape == (10_000, 10) and ort_logits.dtype == np.float32
    assert np.abs(ort_logits - torch_logits).max() <= 1e-4
    assert (ort_logits.argmax(1) == torch_logits.argmax(1)).all()
    assert (ort_logits.argmax(1) == labels).mean() > 0.9  # a trained model, not an empty graph
    assert set(onnx_engine.meta) == set(torch_engine.meta)  # the Predictor reads either engine alike
    for key, value in torch_engine.meta.items():
        assert onnx_engine.meta[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_onnx_checker_passes_and_batch_is_dynamic(trained_run, test_images):
    import onnx
    import onnxruntime as ort

    proto = onnx.load(trained_run / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not a fixed size
    session = ort.InferenceSession(str(trained_run / "model.onnx"), providers=["CPUExecutionProvider"])
    model = TorchEngine(trained_run / "checkpoints" / "best.pt")
    for n in (1, 37):
        x = test_images[0][100:100 + n]
        got = session.run(None, {"images": x})[0]
        assert got.shape == (n, 10)
        assert np.abs(got - model.logits(x)).max() <= 1e-4


def test_parallel_slices_give_the_same_logits_as_one_call(trained_run, test_images):
    x = test_images[0][:1000]
    whole = OnnxEngine(trained_run / "model.onnx", threads=1).logits(x)
    sliced = OnnxEngine(trained_run / "model.onnx", threads=3, chunk=37).logits(x)
    assert sliced.shape == whole.shape and np.abs(sliced - whole).max() <= 1e-5
    with pytest.raises(MnistCnnError, match=r"\(N,28,28\)"):
        OnnxEngine(trained_run / "model.onnx").logits(x[:, :27])


def test_border_crop_is_found_and_exact():
    torch.manual_seed(0)
    tutorial = build_model("tutorial").eval()
    assert unused_border(tutorial) == (2, 2)  # floor-mode pooling drops the last 2 rows and columns
    x = torch.rand(5, 28, 28)
    assert torch.allclose(MnistGraph(tutorial, (2, 2))(x), tutorial(x[:, None]), rtol=0, atol=1e-6)
    every_pixel = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(4, 10)).eval()
    assert unused_border(every_pixel) == (0, 0)


def test_stale_onnx_is_not_used_until_exported_again(run_copy, capsys):
    best = run_copy / "checkpoints" / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    ckpt["model"]["fc2.bias"] = ckpt["model"]["fc2.bias"] + 0.5  # the checkpoint changes after the export
    best.write_bytes(checkpoint_bytes({k: v for k, v in ckpt.items() if k not in ("format_version", "payload_sha256")}))
    assert onnx_for(run_copy) is None
    assert "is out of step with" in capsys.readouterr().err
    assert Predictor.from_checkpoint(run_copy).engine.name == "torch"
    with pytest.raises(MnistCnnError, match="mnist-cnn export"):
        Predictor.from_checkpoint(run_copy, engine="onnx")

    result = run_cli("export", "--checkpoint", str(run_copy))
    assert result.returncode == 0, result.stderr
    assert "onnx.checker passed" in result.stdout and "same argmax" in result.stdout
    assert onnx_for(run_copy) == run_copy / "model.onnx"
    assert read_metadata(run_copy / "model.onnx")["checkpoint_sha256"] == sha256(best)
    predictor = Predictor.from_checkpoint(run_copy)
    assert predictor.engine.name == "onnx"
    reference = Predictor.from_checkpoint(run_copy, engine="torch")
    assert np.allclose(predictor.predict_file(SEVEN).probabilities, reference.predict_file(SEVEN).probabilities,
                       atol=1e-5)


def test_onnx_for_resolves_files_and_folders(run_copy, tmp_path):
    onnx_path = run_copy / "model.onnx"
    assert onnx_for(run_copy / "checkpoints") == onnx_path
    assert onnx_for(onnx_path) == onnx_path
    assert onnx_for(run_copy / "checkpoints" / "best.pt") == onnx_path
    numbered = sorted((run_copy / "checkpoints").glob("cp-*.pt"))
    differs = [p for p in numbered if sha256(p) != sha256(run_copy / "checkpoints" / "best.pt")]
    for other in differs:  # a checkpoint other than the exported one does not get its ONNX file
        assert onnx_for(other) is None
    alone = tmp_path / "deploy"
    alone.mkdir()
    shutil.copy(onnx_path, alone / "model.onnx")  # only the ONNX file: nothing for it to be out of step with
    assert Predictor.from_checkpoint(alone).engine.name == "onnx"
    with pytest.raises(MnistCnnError, match="not found"):
        onnx_for(tmp_path / "missing.onnx")


def test_damaged_onnx_falls_back_to_torch_or_fails_in_one_line(run_copy, tmp_path):
    (run_copy / "model.onnx").write_bytes(b"not an onnx model")
    assert onnx_for(run_copy) is None  # the checkpoint is there: predict with it
    assert Predictor.from_checkpoint(run_copy).engine.name == "torch"
    alone = tmp_path / "deploy"
    alone.mkdir()
    (alone / "model.onnx").write_bytes(b"not an onnx model")
    result = run_cli("predict", "--checkpoint", str(alone), str(SEVEN))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load ONNX model {alone / 'model.onnx'}: "), lines


def test_predict_cli_does_not_import_torch(trained_run):
    code = ("import json, sys\n"
            "from mnist_cnn.cli import main\n"
            f"rc = main(['predict', '--json', '--checkpoint', {str(trained_run)!r}, {str(SEVEN)!r}])\n"
            "heavy = sorted(m for m in ('torch', 'scipy.ndimage', 'tensorflow') if m in sys.modules)\n"
            "print(json.dumps({'rc': rc, 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    prediction, status = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert status["rc"] == 0 and "torch" not in status["heavy"], status
    reference = Predictor.from_checkpoint(trained_run, engine="torch").predict_file(SEVEN)
    assert prediction["digits"] == reference.digits
    assert np.allclose(prediction["probabilities"], reference.probabilities, atol=1e-5)


def test_export_to_chosen_file_with_the_dynamo_exporter(trained_run, tmp_path):
    """The exporter ``auto`` falls back to when a future torch drops the TorchScript one."""
    out = tmp_path / "sub" / "dynamo.onnx"
    result = export_onnx(trained_run / "checkpoints" / "best.pt", out, exporter="dynamo")
    assert result.out == out and out.is_file() and result.exporter == "dynamo"
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert read_metadata(out)["step"] == str(result.meta["step"])


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
    (["--checkpoint", str(ROOT / "pyproject.toml")], "cannot load checkpoint"),
])
def test_export_cli_bad_input_is_one_line_exit_2(args, message):
    result = run_cli("export", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
