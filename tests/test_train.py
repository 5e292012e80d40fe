"""Real (small) training runs: learning happens, files are written, kill + resume equals uninterrupted."""

import json
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT
from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.train import lr_at

SMALL = ["--limit", "6000", "--batch-size", "32", "--epochs", "1", "--save-every", "10", "--keep", "2",
         "--no-export-onnx", "--device", "cpu", "--seed", "3"]


def train_process(run_dir, *extra):
    return subprocess.Popen([sys.executable, "-m", "mnist_cnn", "train", "--run-dir", str(run_dir), *SMALL, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(folder, min_step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(p.stem[3:]) for p in folder.glob("cp-*.pt")]
        if steps and max(steps) >= min_step:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def test_tiny_run_learns_and_writes_its_files(trained_run):
    rows = (trained_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss,train_acc,test_loss,test_acc")
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert float(last["train_loss"]) < 0.3 and float(last["test_acc"]) > 0.95
    assert json.loads((trained_run / "config.json").read_text())["limit"] == 12_000
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(trained_run / "checkpoints" / name)
        assert ckpt["model_name"] == "tutorial" and 0.2 < ckpt["temperature"] < 5


def test_killed_then_resumed_equals_uninterrupted(tmp_path):
    straight = train_process(tmp_path / "straight")
    assert straight.wait(timeout=300) == 0, straight.stderr.read()

    victim = train_process(tmp_path / "resumed")
    wait_for_checkpoint(tmp_path / "resumed" / "checkpoints", 40, victim)
    victim.kill()  # SIGKILL mid-epoch: no chance to save anything more
    victim.wait()
    resumed = train_process(tmp_path / "resumed")  # --resume auto is the default
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_ctrl_c_saves_and_says_how_to_continue(tmp_path):
    proc = train_process(tmp_path / "run")
    wait_for_checkpoint(tmp_path / "run" / "checkpoints", 10, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "interrupted at step" in err and "Traceback" not in err
    step = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"]
    assert step >= 10


def test_onecycle_schedule_shape():
    cfg = TrainConfig(lr=1e-2)
    lrs = [lr_at(s, 1000, cfg) for s in range(1000)]
    assert max(lrs) <= 1e-2 + 1e-12 and lrs.index(max(lrs)) in range(195, 205)
    assert lrs[0] < 1e-3 and lrs[-1] < 1e-4
    assert lr_at(500, 1000, TrainConfig(lr=1e-3, schedule="constant")) == 1e-3
