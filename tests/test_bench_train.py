"""The training benchmark's GPU script runs end to end: on the CPU always (a smoke test of its code), and on
CUDA when this machine has a GPU. Its speed is a benchmark's business, not a test's."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here"))])
def test_gpu_train_script_trains_and_reports(device):
    args = ["--device", device, "--limit", "3000", "--epochs", "1", "--seeds", "0", "--batch-size", "128"]
    if device == "cpu":
        args.append("--no-compile")  # compiling on 2 busy cores takes minutes
    proc = subprocess.run([sys.executable, "bench/gpu_train.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = proc.stdout.strip().splitlines()[-1 if device == "cpu" else -2].split()
    seed, warmup_s, train_s, steps, acc = row[:5]
    assert seed == "0" and int(steps) == 2700 // 128
    assert float(acc) > 0.5  # 21 steps on 2,700 images learn something; chance is 0.1
