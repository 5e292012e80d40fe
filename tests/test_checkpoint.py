"""Checkpoints: atomic saves survive a crash, pickled objects are refused, damaged files are skipped."""

import os
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
from mnist_cnn.model import build_model
mgr = CheckpointManager(sys.argv[1], keep=2)
model = build_model().state_dict()
big = torch.randn(4_000_000)  # 16 MB: a save takes long enough to be killed inside it
step = 0
while True:
    step += 1
    mgr.save({"model_name": "tutorial", "model": model, "big": big, "step": step})
    print(step, flush=True)
"""


def test_kill_during_save_leaves_last_loadable(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # one save done
    time.sleep(0.3)  # …and now somewhere inside another
    proc.kill()
    proc.wait()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] >= 1 and ckpt["big"].shape == (4_000_000,)
    assert CheckpointManager(tmp_path).latest() is not None


def flip_bytes_of(path, tensor: torch.Tensor, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of ``tensor``'s stored data inside the checkpoint file ``path``."""
    raw = bytearray(path.read_bytes())
    data = tensor.contiguous().numpy().tobytes()
    at = raw.find(data)
    assert at >= 0, "tensor bytes not found in the file"
    middle = at + len(data) // 2
    raw[middle:middle + count] = bytes(b ^ 0xFF for b in raw[middle:middle + count])
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_a_weight_are_refused_and_resume_skips_them(tmp_path, capsys):
    mgr = CheckpointManager(tmp_path, keep=5)
    mgr.save(state(1))
    mgr.save(state(2))
    weight = state(2)["model"]["fc1.weight"]
    for name in ("cp-0000002.pt", "last.pt"):
        flip_bytes_of(tmp_path / name, weight)
    with pytest.raises(MnistCnnError, match="damaged.*SHA-256"):
        load_checkpoint(tmp_path / "last.pt")
    path, ckpt = mgr.latest()
    assert path.name == "cp-0000001.pt" and ckpt["step"] == 1
    assert "skipping damaged checkpoint" in capsys.readouterr().err


def test_wrong_shapes_and_foreign_dicts_are_one_line_errors(tmp_path, capsys):
    mgr = CheckpointManager(tmp_path, keep=5)
    mgr.save(state(1))
    wide = {**state(2), "model": build_model("wide").state_dict()}  # a valid file, labelled with the wrong model
    mgr.save(wide)
    with pytest.raises(MnistCnnError, match="does not fit model 'tutorial'") as e:
        load_checkpoint(tmp_path / "last.pt")
    assert "\n" not in str(e.value)
    assert mgr.latest()[1]["step"] == 1  # resume goes back to the last checkpoint that fits
    assert "does not fit" in capsys.readouterr().err
    torch.save({"format_version": 1, "model": {"a": 1}, "step": 3}, tmp_path / "foreign.pt")
    with pytest.raises(MnistCnnError, match="not an mnist-cnn checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_stale_temp_files_of_dead_savers_are_removed(tmp_path):
    from mnist_cnn.checkpoint import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    names = {f".cp-0000010.pt.tmp{dead}": False, f".last.pt.tmp{os.getpid()}": True,  # a live saver's: kept
             "notes.tmp1": True, ".hidden": True, "cp-0000010.pt": True}
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [f".cp-0000010.pt.tmp{dead}"]
    assert {n: (tmp_path / n).exists() for n in names} == names


def test_a_write_error_names_the_file(tmp_path):
    """A file-size limit makes the write fail as a full disk does (EFBIG/ENOSPC): one line, the old file kept."""
    script = ("import resource, sys; from mnist_cnn.checkpoint import CheckpointManager; from mnist_cnn.model import "
              "build_model; m = CheckpointManager(sys.argv[1]); m.save({'model_name': 'tutorial', 'model': "
              "build_model().state_dict(), 'step': 1}); resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000));"
              "\nfrom mnist_cnn import MnistCnnError\ntry: m.save({'model_name': 'tutorial', 'model': "
              "build_model().state_dict(), 'step': 2})\nexcept MnistCnnError as e: print(e)")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"cannot write {tmp_path / 'cp-0000002.pt'}: File too large"), r.stdout
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
