"""1 process vs N torchrun processes: seconds per epoch and test accuracy at the same global batch.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_distributed.py`` (CPU; 5-10 minutes on 2 busy cores), or on
a GPU machine ``… bench/bench_distributed.py --device cuda --configs 1x1,2x1,4x1,8x1`` (one process per GPU).
Options: --configs PxT,… (P processes of T threads each), --limit N (0 = all 60,000), --epochs,
--batch-size (global), --repeats.

Every configuration trains the same global batch from the same seed, so accuracy should agree to within
float rounding; only the time may change. The CPU default compares 1 process using every core, 1 process
with 1 thread, and one single-threaded process per core: N processes have no more arithmetic than one, so
this measures how the per-step all-reduce and smaller per-process batches compare with intra-op threads.
Prints a table; writes bench/results/distributed_<device>.json. Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = os.cpu_count() or 1
    p.add_argument("--configs", default=f"1x{cores},1x1,{cores}x1",
                   help=f"PROCESSESxTHREADS to compare, the first is the baseline (default: 1x{cores},1x1,{cores}x1)")
    p.add_argument("--limit", type=int, default=20_000, help="training images (0: all; default: 20000)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per run (default: 1)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch (default: 128)")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration (default: 3)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default: cpu")
    return p.parse_args()


def command(world: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """One process: the plain CLI (the baseline users run). Several: torchrun --standalone."""
    if args.batch_size % world:
        sys.exit(f"error: --batch-size {args.batch_size} is not divisible by {world} processes")
    train = ["-m", "mnist_cnn", "train", "--run-dir", str(run_dir), "--resume", "never", "--no-export-onnx",
             "--save-every", "0", "--epochs", str(args.epochs), "--limit", str(args.limit),
             "--batch-size", str(args.batch_size // world), "--device", args.device, "--precision", "fp32"]
    if world == 1:
        return [sys.executable, *train]
    return [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(world),
            *train]


def one_run(world: int, threads: int, args: argparse.Namespace) -> dict:
    """Train once; seconds per epoch (training + the sharded test pass) from metrics.csv, and accuracy."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench_dist_"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(command(world, args, run_dir), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"error: {world}-process run failed:\n{proc.stderr[-3000:]}")
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"epoch_s": statistics.median(float(r["seconds"]) for r in rows), "wall_s": wall,
            "test_acc": float(rows[-1]["test_acc"])}


def main() -> None:
    args = parse_args()
    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
    runs = {c: [] for c in configs}
    for _ in range(args.repeats):  # interleaved, so that a change in background load hits every configuration
        for c in configs:
            runs[c].append(one_run(*c, args))
            print(f"  {c[0]} process(es) x {c[1]} thread(s): {runs[c][-1]['epoch_s']:.1f} s/epoch", file=sys.stderr)
    n_train = (args.limit or 60_000) - min(2000, (args.limit or 60_000) // 10)  # less the held-out images
    base = statistics.median(r["epoch_s"] for r in runs[configs[0]])
    rows = []
    for (w, threads), got in runs.items():
        epoch = statistics.median(r["epoch_s"] for r in got)
        rows.append({"processes": w, "threads_per_process": threads,
                     "per_process_batch": args.batch_size // w, "epoch_s_median": round(epoch, 2),
                     "epoch_s_all": [round(r["epoch_s"], 2) for r in got],
                     "wall_s_median": round(statistics.median(r["wall_s"] for r in got), 2),
                     "images_per_s": round(n_train / epoch), "speedup_vs_first": round(base / epoch, 2),
                     "test_acc": [r["test_acc"] for r in got]})
    print(f"\n{'procs':>5} {'threads':>7} {'batch/proc':>10} {'s/epoch':>8} {'img/s':>7} {'speedup':>7} "
          f"{'wall s':>7}  test_acc")
    for r in rows:
        print(f"{r['processes']:>5} {r['threads_per_process']:>7} {r['per_process_batch']:>10} "
              f"{r['epoch_s_median']:>8.2f} {r['images_per_s']:>7} {r['speedup_vs_first']:>7.2f} "
              f"{r['wall_s_median']:>7.1f}  {', '.join(f'{a:.4f}' for a in r['test_acc'])}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"distributed_{args.device}.json"
    out.write_text(json.dumps({
        "benchmark": "bench_distributed", "device": args.device, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "limit": args.limit, "train_images": n_train,
        "epochs": args.epochs, "global_batch": args.batch_size, "repeats": args.repeats,
        "statistic": f"median of {args.repeats}", "load_average_at_end": os.getloadavg(), "rows": rows,
        "note": "s/epoch = training + the sharded test pass of one epoch (metrics.csv 'seconds'); wall includes "
                "start-up (import torch once per process)"}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
