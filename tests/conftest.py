"""Shared fixtures: real, small training runs (no mocks), trained once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """Tests write --precision auto's timings to a folder of their own, not to the user's ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run folder trained for 2 epochs on 12,000 MNIST images (~97-98 % test accuracy, ~15 s here).

    Holds checkpoints/{best,last,cp-*}.pt, metrics.csv, config.json and model.onnx when export is available.
    """
    from mnist_cnn.config import TrainConfig
    from mnist_cnn.train import train

    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    train(TrainConfig(epochs=2, limit=12_000, batch_size=128, lr=3e-3, label_smoothing=0.0, run_dir=str(run_dir),
                      resume="never", save_every=0))
    return run_dir


def run_cli(*args: str, timeout: float = 600, cwd: Path | None = None, env: dict | None = None):
    """Run ``python -m mnist_cnn ARGS`` as a user would; returns the CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mnist_cnn", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=full_env)


def flip_weight_byte(path: Path) -> None:
    """Change one byte inside the largest weight of an ONNX file, in place; the file stays a valid model."""
    import onnx

    data = bytearray(path.read_bytes())
    weights = max(onnx.load(path).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    at = data.find(weights) + len(weights) // 2
    assert len(weights) > 1000 and at > len(weights) // 2
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))
