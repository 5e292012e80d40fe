"""Distributed training through torchrun: real gloo runs on CPU, no mocks.

Run: ``PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_distributed.py`` (2.5 minutes measured on this
shared 2-core machine at load average 8; most of it is torch's start-up, once per process per torchrun).

Every run trains the same thing: 1,844 images (``--limit 2048`` less the held-out tenth), 1 epoch, global
batch 64 (2 processes x 32, or 1 x 64), seed 0, fp32, one thread per process: 29 steps.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_cnn import distributed as D
from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
N_TRAIN, STEPS = 1844, 29
COMMON = ["--limit", "2048", "--epochs", "1", "--save-every", "4", "--keep", "0", "--precision", "fp32",
          "--no-export-onnx", "--seed", "0", "--device", "cpu", "--batch-size", "64", "--lr", "2e-3"]
# Single process vs 2 ranks: the same images, but a gradient is summed over 64 images in one process and
# over 2 x 32 then all-reduced in two, so float32 rounding differs in the last bits; Adam carries that
# through 29 steps. Adam divides each parameter's step by its own gradient scale, so where a gradient is near
# zero a last-bit difference can move that parameter's update by up to about the learning rate (2e-3).
# Measured max |difference| on weights of size ~0.1: 1.4e-6 on an AVX2 CPU, 2.5e-4 on an AVX-512 one (other
# kernels, other summation order). Half a learning rate bounds it; a wrong reduction shows in the metrics too.
WEIGHT_TOL = 1e-3

pytestmark = pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_gloo_available(),
                                reason="needs torchrun and the gloo backend")


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs use one thread, like each torchrun worker here: on a busy 2-core machine two OpenMP
    threads wait on each other (bench_distributed measured 1 thread 3.5x faster under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(launcher: list[str], run_dir: str, *extra: str, cwd: Path) -> subprocess.Popen:
    """Start ``torchrun LAUNCHER -m mnist_cnn train`` as a user would; output goes to cwd/out.log."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN), *launcher, "-m", "mnist_cnn", "train", "--run-dir", run_dir, *COMMON, *extra]
    cwd.mkdir(parents=True, exist_ok=True)
    with open(cwd / "out.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    """The exit status of a torchrun started by ``torchrun``; stops it if it hangs."""
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return rc


def output(cwd: Path) -> str:
    return (cwd / "out.log").read_text().replace("\r", "\n")


def digest_of(path: Path) -> str:
    return D.weights_digest(load_checkpoint(path)["model"])


def replica_digests(text: str) -> list[str]:
    found = re.findall(r"replica check: weights sha256 by rank ((?:\d+:[0-9a-f]+ ?)+)", text)
    assert len(found) == 1, text[-3000:]
    return [item.split(":")[1] for item in found[0].split()]


def worker_pid(parent: int, rank: int, timeout: float = 60) -> int:
    """The pid of torchrun's worker process with global rank ``rank`` (read from its environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != parent:
                    continue
                env = (stat.parent / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if f"RANK={rank}".encode() in env:
                return int(stat.parent.name)
        time.sleep(0.1)
    raise AssertionError(f"no worker with RANK={rank} under pid {parent}")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"torchrun ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.02)


# ---------------------------------------------------------------- the position arithmetic
@pytest.mark.parametrize("old,new", [(64, 64), (64, 48), (64, 128), (32, 100), (128, 1)])
def test_rescaled_position_continues_at_the_same_image(old, new):
    """Every saved step maps to batches that cover exactly the rest of that epoch, in the same order."""
    from types import SimpleNamespace

    from mnist_cnn.train import _batches_of_epoch, epoch_order

    n, epochs = 1000, 2
    old_spe, new_spe = -(-n // old), -(-n // new)
    for step in range(old_spe * epochs + 1):
        new_step, offset = D.rescale_position(step, n, old, new)
        epoch = step // old_spe
        assert offset == (step % old_spe) * old and new_step // new_spe == epoch  # same epoch, same image
        if new == old:
            assert new_step == step
        if epoch == epochs:
            continue
        run = SimpleNamespace(step=new_step, first_offset=offset, cfg=SimpleNamespace(seed=3),
                              device=torch.device("cpu"), dist=D.Dist())
        seen = torch.cat([idx for _, idx, _ in _batches_of_epoch(run, n, epoch, new_spe, new)])
        assert torch.equal(seen, epoch_order(n, 3, epoch, torch.device("cpu"))[offset:])


# ---------------------------------------------------------------- two machines, no shared disk
def tree(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> dict:
    """A 2-node run (2 torchrun invocations, 1 process each, c10d rendezvous on 127.0.0.1).

    Each "machine" has its own working folder and a relative --run-dir, as two hosts without a shared disk:
    a file written by the rank on the other node would show up in that node's folder. Machine b starts with
    a step-0 checkpoint (the seeded initial weights, so training is the same as a fresh run) that a lacks;
    c10d gives rank 0 to the agent with the lower pid, usually a: then the ranks must agree to resume from
    the file only rank 1 can read, as after a restart that moved rank 0 to another machine.
    """
    from mnist_cnn.run import Run

    base = tmp_path_factory.mktemp("two_nodes")
    start = Run(TrainConfig(batch_size=64, lr=2e-3, seed=0, device="cpu", limit=2048, epochs=1, precision="fp32",
                            run_dir=str(base / "b" / "run")))  # the same run as COMMON's: resume accepts it
    start.ckpts.save(start.state())
    before = {"a": {}, "b": tree(base / "b")}
    launcher = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "test"]
    procs = {name: torchrun(launcher, "run", "--batch-size", "32", cwd=base / name) for name in ("a", "b")}
    status = {name: finish(p) for name, p in procs.items()}
    logs = {name: output(base / name) for name in procs}
    assert status == {"a": 0, "b": 0}, logs
    main = [name for name in logs if "replica check" in logs[name]]
    assert len(main) == 1, logs
    other = "b" if main[0] == "a" else "a"
    return {"main": base / main[0], "other": base / other, "other_before": before[other]}


def test_two_node_run_completes_and_only_global_rank_0_writes(two_nodes):
    main, other = two_nodes["main"], two_nodes["other"]
    assert f"{STEPS} steps, batch 64 (2 processes)" in output(main)
    ckpts = {p.name for p in (main / "run" / "checkpoints").iterdir()} - {"cp-0000000.pt"}
    assert ckpts == {"best.pt", "last.pt", *(f"cp-{s:07d}.pt" for s in (4, 8, 12, 16, 20, 24, 28, 29))}
    assert (main / "run" / "metrics.csv").is_file() and (main / "run" / "config.json").is_file()
    after = tree(other)
    assert after.pop("out.log") and after == two_nodes["other_before"]  # the other rank wrote nothing
    assert "epoch 1/1" not in output(other) and "test accuracy" not in output(other)  # nor printed


def test_ranks_agree_on_the_checkpoint_that_one_machine_holds(two_nodes):
    assert re.search(r"resumed from \S+ \(step 0\)", output(two_nodes["main"]))


def test_replicas_hold_identical_weights_at_the_end(two_nodes):
    """Each rank hashes its own weights at the end; rank 0 prints them all. They must equal the checkpoint."""
    digests = replica_digests(output(two_nodes["main"]))
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] == digest_of(two_nodes["main"] / "run" / "checkpoints" / "last.pt")


def test_matches_one_process_with_the_same_global_batch(two_nodes, tmp_path):
    from mnist_cnn.train import train

    train(TrainConfig(limit=2048, epochs=1, batch_size=64, lr=2e-3, save_every=0, precision="fp32", export_onnx=False,
                      seed=0, device="cpu", resume="never", run_dir=str(tmp_path / "one")))
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    two = load_checkpoint(two_nodes["main"] / "run" / "checkpoints" / "last.pt")
    assert one["step"] == two["step"] == STEPS
    diff = max((one["model"][k] - two["model"][k]).abs().max().item() for k in one["model"])
    assert diff < WEIGHT_TOL
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):  # all-reduced metrics = one process's
        assert one["history"][0][key] == pytest.approx(two["history"][0][key], abs=2e-4), key


# ---------------------------------------------------------------- resume on another number of processes
def _seed_run(two_nodes, dest: Path, step: int) -> None:
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copy(two_nodes["main"] / "run" / "checkpoints" / f"cp-{step:07d}.pt", dest / "checkpoints")


def test_checkpoint_of_two_processes_resumes_on_one(two_nodes, tmp_path):
    """Same global batch (1 x 64 after 2 x 32): it ends where the uninterrupted 2-process run ended."""
    from mnist_cnn.train import train

    _seed_run(two_nodes, tmp_path / "r", 12)
    result = train(TrainConfig(limit=2048, epochs=1, batch_size=64, lr=2e-3, save_every=0, precision="fp32",
                               export_onnx=False, seed=0, device="cpu", run_dir=str(tmp_path / "r")))
    assert result["step"] == STEPS
    one = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["model"]
    two = load_checkpoint(two_nodes["main"] / "run" / "checkpoints" / "last.pt")["model"]
    assert max((one[k] - two[k]).abs().max().item() for k in one) < WEIGHT_TOL


def test_other_global_batch_resumes_at_the_same_image(two_nodes, tmp_path, capsys):
    """Global batch 64 -> 48: step 12 of 64 is image 768; the rest of the epoch is cut into batches of 48."""
    from mnist_cnn.train import train

    _seed_run(two_nodes, tmp_path / "r", 12)
    result = train(TrainConfig(limit=2048, epochs=1, batch_size=48, lr=2e-3, save_every=0, precision="fp32",
                               export_onnx=False, seed=0, device="cpu", run_dir=str(tmp_path / "r")))
    log = capsys.readouterr().err
    remaining = -(-(N_TRAIN - 768) // 48)  # 23 batches of 48 from image 768
    spe = -(-N_TRAIN // 48)  # 39
    assert f"global batch 64 -> 48: continuing epoch 1 at image 768 of its order (step 12 -> {spe - remaining}" in log
    assert result["step"] == spe and result["test_acc"] > 0.6


# ---------------------------------------------------------------- failures and signals on one machine
def test_killed_worker_is_restarted_and_resumes_from_the_checkpoint(two_nodes, tmp_path):
    """kill -9 global rank 0 (the writer) after its first checkpoint: torchrun restarts both workers, which
    resume from that checkpoint and end with bit-identical weights to the uninterrupted run (same 2-rank
    arithmetic; resume restores model, Adam state, step and the position in the seeded order)."""
    launcher = ["--nproc-per-node", "2", "--max-restarts", "1", "--master-port", str(free_port())]
    proc = torchrun(launcher, "run", "--batch-size", "32", cwd=tmp_path)
    wait_for(tmp_path / "run" / "checkpoints" / "cp-0000004.pt", proc)
    os.kill(worker_pid(proc.pid, rank=0), signal.SIGKILL)
    rc = finish(proc)
    log = output(tmp_path)
    assert rc == 0, log[-3000:]
    resumed = [int(s) for s in re.findall(r"resumed from \S+ \(step (\d+)\)", log)]
    assert len(resumed) == 1 and 4 <= resumed[0] < STEPS, log[-3000:]
    final = tmp_path / "run" / "checkpoints" / "last.pt"
    assert load_checkpoint(final)["step"] == STEPS
    assert digest_of(final) == digest_of(two_nodes["main"] / "run" / "checkpoints" / "last.pt")


def test_sigterm_stops_every_rank_after_the_same_step_and_saves(tmp_path):
    """SIGTERM to torchrun (as a scheduler's preemption, or Ctrl-C's SIGINT): the ranks agree on a step,
    rank 0 saves it, one message, prompt exit. 4,096 images (58 steps) leave room for a slow signal."""
    launcher = ["--nproc-per-node", "2", "--master-port", str(free_port())]
    proc = torchrun(launcher, "run", "--batch-size", "32", "--limit", "4096", cwd=tmp_path)
    wait_for(tmp_path / "run" / "checkpoints" / "cp-0000004.pt", proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    finish(proc, timeout=60)
    took = time.monotonic() - t0
    log = output(tmp_path)
    stops = [int(s) for s in re.findall(r"error: interrupted at step (\d+)", log)]
    assert len(stops) == 1, log[-3000:]  # said once, by rank 0
    assert stops[0] % D.STOP_CHECK_EVERY == 0 and 4 < stops[0] < 58
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == stops[0]
    assert took < 25, f"took {took:.1f} s: torchrun had to SIGKILL a worker (its grace period is 30 s)"
