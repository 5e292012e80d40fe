"""Checkpoints: atomic saves survive a crash, pickled objects are refused, damaged files are skipped."""

import subprocess
import sys
import time

import pytest
import torch

from mnist_cnn import MnistCnnError
from mnist_cnn.checkpoint import CheckpointManager, load_checkpoint
from mnist_cnn.model import build_model


def state(step: int) -> dict:
    torch.manual_seed(step)
    return {"model_name": "tutorial", "model": build_model().state_dict(), "step": step, "best_acc": 0.5}


def test_save_load_roundtrip_with_weights_only(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        mgr.save(state(step), best=step == 20)
    assert [s for s, _ in mgr.numbered()] == [20, 30]  # keep the newest 2
    assert (tmp_path / "cp-0000030.pt").is_file()
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["step"] == 30 and raw["format_version"] == 1
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 20
    assert mgr.latest()[1]["step"] == 30


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "step": 0, "payload": Evil()}, path)
    with pytest.raises(MnistCnnError, match="cannot load checkpoint"):
        load_checkpoint(path)


def test_damaged_latest_is_skipped_with_a_warning(tmp_path, capsys):
    mgr = CheckpointManager(tmp_path, keep=5)
    mgr.save(state(1))
    mgr.save(state(2))
    for name in ("cp-0000002.pt", "last.pt"):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:1000])  # truncated
    path, ckpt = mgr.latest()
    assert path.name == "cp-0000001.pt" and ckpt["step"] == 1
    assert "skipping damaged checkpoint" in capsys.readouterr().err


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_text("hello")
    with pytest.raises(MnistCnnError):
        load_checkpoint(tmp_path / "x.pt")


CRASHER = """
import sys, torch
from mnist_cnn.checkpoint import CheckpointManager
mgr = CheckpointManager(sys.argv[1], keep=2)
big = {"w": torch.randn(4_000_000)}  # 16 MB: a save takes long enough to be killed inside it
step = 0
while True:
    step += 1
    mgr.save({"model": big, "step": step})
    print(step, flush=True)
"""


def test_kill_during_save_leaves_last_loadable(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # one save done
    time.sleep(0.3)  # …and now somewhere inside another
    proc.kill()
    proc.wait()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] >= 1 and ckpt["model"]["w"].shape == (4_000_000,)
    assert CheckpointManager(tmp_path).latest() is not None
