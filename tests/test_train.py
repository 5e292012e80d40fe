"""Real (small) training runs: learning happens, files are written, kill + resume equals uninterrupted."""

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    proc = train_process(run_dir)
    _, err = proc.communicate(timeout=600)  # read as it comes: a full stderr pipe would stall the run
    assert proc.returncode == 0, err
    return run_dir


def test_tiny_run_learns_and_writes_its_files(trained_run):
    rows = (trained_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss,train_acc,test_loss,test_acc")
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert float(last["train_loss"]) < 0.3 and float(last["test_acc"]) > 0.95
    assert json.loads((trained_run / "config.json").read_text())["limit"] == 12_000
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(trained_run / "checkpoints" / name)
        assert ckpt["model_name"] == "tutorial" and 0.2 < ckpt["temperature"] < 5


def test_killed_then_resumed_equals_uninterrupted(straight_run, tmp_path):
    victim = train_process(tmp_path / "resumed")
    wait_for_checkpoint(tmp_path / "resumed" / "checkpoints", 40, victim)
    victim.kill()  # SIGKILL mid-epoch: no chance to save anything more
    victim.wait()
    resumed = train_process(tmp_path / "resumed")  # --resume auto is the default
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    a, b = weights(straight_run), weights(tmp_path / "resumed")
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


# Sends a signal to its own training process right after optimizer step N (a seeded moment), then trains.
SIGNAL_AT_STEP = """
import os, signal, sys
from mnist_cnn import optim
at, sig, times = int(sys.argv[1]), getattr(signal, sys.argv[2]), int(sys.argv[3])
steps, adam_step = [0], optim.Adam.step
def step_then_signal(opt):
    adam_step(opt)
    steps[0] += 1
    if steps[0] == at:
        for _ in range(times):
            os.kill(os.getpid(), sig)
optim.Adam.step = step_then_signal
from mnist_cnn.cli import main
sys.exit(main(sys.argv[4:]))
"""


def train_signalled(run_dir, at: int, sig: str, times: int = 1):
    return subprocess.run([sys.executable, "-c", SIGNAL_AT_STEP, str(at), sig, str(times), "train", "--run-dir",
                           str(run_dir), *SMALL], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_right_after_a_step_saves_that_step_and_resumes_exactly(straight_run, tmp_path, sig):
    """The signal lands just after optimizer step 50 updated the weights: the checkpoint is step 50, whole."""
    stopped = train_signalled(tmp_path, 50, sig)
    assert stopped.returncode == 2, stopped.stderr
    assert f"error: interrupted at step 50 ({sig}): saved" in stopped.stderr and "--resume auto" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 50
    resumed = train_process(tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a, b = load_checkpoint(straight_run / "checkpoints" / "last.pt"), load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "weights differ"
    moments = [(x[k], y[k]) for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())
               for k in x]
    assert all(torch.equal(x, y) for x, y in moments), "Adam state differs"


def test_a_second_signal_exits_at_once_without_saving(tmp_path):
    r = train_signalled(tmp_path, 50, "SIGINT", times=2)
    assert r.returncode == 128 + signal.SIGINT, r.stderr
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 40  # the last periodic save


def test_a_second_training_in_the_same_run_folder_is_refused(tmp_path):
    first = train_process(tmp_path)
    try:
        wait_for_checkpoint(tmp_path / "checkpoints", 10, first)
        second = subprocess.run([sys.executable, "-m", "mnist_cnn", "train", "--run-dir", str(tmp_path), *SMALL,
                                 "--seed", "1", "--lr", "0.01"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: run folder {tmp_path} is in use by pid {first.pid} (another training): wait for it to finish, "
        f"stop it, or choose another --run-dir")


def test_resuming_another_seed_is_refused_with_what_differs(straight_run):
    r = subprocess.run([sys.executable, "-m", "mnist_cnn", "train", "--run-dir", str(straight_run), *SMALL,
                        "--seed", "4"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "trained with --seed 3 (asked for now: 4)" in r.stderr and "--resume never" in r.stderr


def test_a_changed_recipe_is_a_warning(capsys):
    from mnist_cnn.runfolder import check_same_run

    check_same_run({"seed": 3, "epochs": 1, "lr": 0.002}, {"seed": 3, "epochs": 2, "lr": 0.002}, Path("run"))
    assert "warning: run was trained with --epochs 1; continuing with 2" in capsys.readouterr().err


def test_a_run_folder_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    r = subprocess.run([sys.executable, "-m", "mnist_cnn", "train", "--run-dir", str(tmp_path / "run"), *SMALL],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: run folder {tmp_path / 'run'} is a file, not a folder: choose another --run-dir")


def test_onecycle_schedule_shape():
    cfg = TrainConfig(lr=1e-2)
    lrs = [lr_at(s, 1000, cfg) for s in range(1000)]
    assert max(lrs) <= 1e-2 + 1e-12 and lrs.index(max(lrs)) in range(195, 205)
    assert lrs[0] < 1e-3 and lrs[-1] < 1e-4
    assert lr_at(500, 1000, TrainConfig(lr=1e-3, schedule="constant")) == 1e-3


def _adam_pair():
    from mnist_cnn.model import build_model
    from mnist_cnn.optim import Adam

    torch.manual_seed(0)
    ours = build_model("tutorial")
    theirs = build_model("tutorial")
    theirs.load_state_dict(ours.state_dict())
    return ours, Adam(ours.parameters(), lr=3e-3), theirs, torch.optim.Adam(theirs.parameters(), lr=3e-3, fused=True)


def _adam_steps(model, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_our_adam_is_torchs_fused_adam_to_the_bit_and_shares_its_state_dict():
    ours, opt, theirs, ref = _adam_pair()
    _adam_steps(ours, opt, 5)
    _adam_steps(theirs, ref, 5)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    saved, saved_ref = copy.deepcopy(opt.state_dict()), copy.deepcopy(ref.state_dict())  # as if from a file
    assert saved["param_groups"][0].keys() == saved_ref["param_groups"][0].keys()
    ref.load_state_dict(saved)  # a checkpoint of ours continues in torch's, and the other way round
    opt.load_state_dict(saved_ref)
    _adam_steps(ours, opt, 3, seed=2)
    _adam_steps(theirs, ref, 3, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    with pytest.raises(ValueError, match="parameters"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0, 1]}]})


def test_training_never_imports_the_compiler_stack(tmp_path):
    """torch.optim would import torch._dynamo and sympy, scipy.optimize the temperature fit's scipy: a large
    share of the peak-RSS budget (see optim.py and calibrate.fit_temperature). 60 held-out images: the fit runs."""
    code = ("import sys; from mnist_cnn.train import train; from mnist_cnn.config import TrainConfig; "
            "train(TrainConfig(limit=600, epochs=1, batch_size=64, holdout=60, save_every=0, export_onnx=False, "
            "device='cpu', run_dir=sys.argv[1], resume='never', ema=0.99)); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy', 'scipy') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
