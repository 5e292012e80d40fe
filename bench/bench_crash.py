"""Crash and resume: ``python bench/bench_crash.py [--kills 20] [--sigints 20] [--seed 0]``.

Trains a small run without interruption, then the same run again while faults land at seeded random moments:
``kill -9`` (no chance to save: resume from the last periodic checkpoint, maybe killed inside a save) and
SIGINT (the stop handler saves between two steps). After each fault the same command resumes it, until the
run ends; its final weights and Adam state must be bit-identical to the uninterrupted run's. Checkpoints are
saved every 5 steps, so many kills land inside a save. Prints a table; writes bench/results/crash.json.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, table, write_json  # noqa: E402

CONFIG = ["--batch-size", "32", "--save-every", "5", "--keep", "2", "--no-export-onnx", "--device", "cpu",
          "--precision", "fp32", "--seed", "7"]


def start(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnist_cnn", "train", "--run-dir", str(run_dir), *CONFIG],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_training(proc: subprocess.Popen) -> bool:
    """Read stderr until the training loop starts; False if the process ended first."""
    for line in proc.stderr:
        if line.startswith("training "):
            return True
    return False


def final_state(run_dir: Path) -> tuple[dict, dict, int]:
    from mnist_cnn.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    return ckpt["model"], ckpt["optimizer"]["state"], ckpt["step"]


def identical(a: tuple, b: tuple) -> bool:
    import torch

    weights = all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    adam = all(torch.equal(x[k], y[k]) for x, y in zip(a[1].values(), b[1].values()) for k in x)
    return weights and adam and a[2] == b[2]


def faulted_run(run_dir: Path, fault: str, faults: int, rng: random.Random, window_s: float) -> dict:
    """Inject ``faults`` faults into one run (resuming after each), then let it finish."""
    sig = signal.SIGKILL if fault == "kill -9" else signal.SIGINT
    injected, clean_stops, finished_early = 0, 0, 0
    while injected < faults:
        proc = start(run_dir)
        if not wait_training(proc):
            finished_early += 1
            proc.wait()
            break
        time.sleep(rng.uniform(0.0, window_s))
        if proc.poll() is not None:  # it finished before the fault: the run is complete
            finished_early += 1
            break
        proc.send_signal(sig)
        rest = proc.stderr.read()
        proc.wait()
        injected += 1
        clean_stops += proc.returncode == 2 and "interrupted at step" in rest and "Traceback" not in rest
    last = start(run_dir)
    err = last.stderr.read()
    assert last.wait() == 0, err
    return {"injected": injected, "clean_stops": clean_stops, "finished_early": finished_early}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--sigints", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, default=3.0, help="a fault lands up to this many seconds into training")
    p.add_argument("--limit", type=int, default=6000, help="training images (a small run: faults are cheap)")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    CONFIG.extend(["--limit", str(args.limit), "--epochs", str(args.epochs)])
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        straight = start(Path(tmp) / "straight")
        assert straight.wait() == 0, straight.stderr.read()
        reference = final_state(Path(tmp) / "straight")
        for fault, count in (("kill -9", args.kills), ("SIGINT", args.sigints)):
            done, chain = 0, 0
            while done < count:
                run_dir = Path(tmp) / f"{fault.replace(' ', '')}-{chain}"
                row = faulted_run(run_dir, fault, count - done, rng, args.window)
                row.update(fault=fault, run=chain, identical=identical(final_state(run_dir), reference),
                           leftover_tmp=len(list((run_dir / "checkpoints").glob(".*.tmp*"))))
                rows.append(row)
                done += row["injected"]
                chain += 1
        seconds = round(time.time() - t0, 1)
    cols = ["fault", "run", "injected", "clean_stops", "finished_early", "identical", "leftover_tmp"]
    print(table(rows, cols))
    total = {f: sum(r["injected"] for r in rows if r["fault"] == f) for f in ("kill -9", "SIGINT")}
    lost = sum(not r["identical"] for r in rows)
    print(f"faults injected: {total}; runs not bit-identical: {lost}; {seconds} s")
    write_json("crash", {"config": CONFIG, "seed": args.seed, "window_s": args.window,
                         "rows": rows, "faults": total, "runs_not_identical": lost, "seconds": seconds})


if __name__ == "__main__":
    main()
