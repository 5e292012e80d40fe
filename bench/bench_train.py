"""Training time to accuracy: our default ``mnist-cnn train`` vs a naive tutorial-style PyTorch loop.

Run: python bench/bench_train.py [--seeds 0 1 2] [--naive-runs 3] [--extra-args "--batch-size 256"]
Each measurement is a whole process (interpreter start, torch import, data load, training, evaluation,
ONNX export) timed from outside; peak RSS is the child's own. Runs alternate between the two so that load
from elsewhere on the machine hits both alike. Prints a table and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, run_measured, table, write_json  # noqa: E402

TARGET = 0.992


def ours(seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wall, rss, out, err = run_measured("mnist_cnn", ["train", "--run-dir", tmp, "--resume", "never",
                                                         "--seed", str(seed), *extra])
        rows = list(csv.DictReader(open(Path(tmp) / "metrics.csv")))
    acc = float(rows[-1]["test_acc"])
    train_s = sum(float(r["seconds"]) for r in rows)
    return {"seed": seed, "wall_s": wall, "train_s": train_s, "s_per_epoch": train_s / len(rows),
            "epochs": len(rows), "test_acc": acc, "peak_rss_mib": rss, "reached": acc >= TARGET}


def naive(seed: int, epochs: int) -> dict:
    wall, rss, out, _ = run_measured("bench/naive_train.py", ["--epochs", str(epochs), "--seed", str(seed)])
    res = json.loads(out.strip().splitlines()[-1])
    secs = [e["seconds"] for e in res["epochs"]]
    return {"seed": seed, "wall_s": wall, "train_s": sum(secs), "s_per_epoch": sum(secs) / len(secs),
            "epochs": len(secs), "test_acc": res["test_acc"], "peak_rss_mib": rss,
            "reached": res["test_acc"] >= TARGET}


def summarise(name: str, runs: list[dict]) -> dict:
    accs = [r["test_acc"] for r in runs]
    return {"loop": name, "runs": len(runs), "wall_s": round(median([r["wall_s"] for r in runs]), 1),
            "s_per_epoch": round(median([r["s_per_epoch"] for r in runs]), 2),
            "epochs": runs[0]["epochs"], "mean_acc": round(sum(accs) / len(accs), 4), "min_acc": round(min(accs), 4),
            "peak_rss_mib": round(median([r["peak_rss_mib"] for r in runs])),
            "time_to_99.2_s": round(median([r["wall_s"] for r in runs]), 1) if sum(accs) / len(accs) >= TARGET else "not reached"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for our runs (default: 0 1 2)")
    p.add_argument("--naive-runs", type=int, default=3, help="runs of the naive loop (default: 3; 0 skips it)")
    p.add_argument("--naive-epochs", type=int, default=5, help="the tutorial's 5 epochs (default: 5)")
    p.add_argument("--extra-args", default="", help="extra flags for mnist-cnn train, e.g. '--epochs 4'")
    args = p.parse_args()
    extra = shlex.split(args.extra_args)
    ours_runs, naive_runs = [], []
    for i in range(max(len(args.seeds), args.naive_runs)):
        if i < len(args.seeds):
            ours_runs.append(ours(args.seeds[i], extra))
            print(f"ours  seed {args.seeds[i]}: {ours_runs[-1]}", file=sys.stderr)
        if i < args.naive_runs:
            naive_runs.append(naive(i, args.naive_epochs))
            print(f"naive run {i}: {naive_runs[-1]}", file=sys.stderr)
    rows = [summarise("mnist-cnn train " + " ".join(extra), ours_runs)]
    if naive_runs:
        rows.append(summarise("naive DataLoader loop, batch 32", naive_runs))
        rows[0]["speedup_vs_naive"] = f"{rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x"
    print(f"machine: {machine()}")
    print(table(rows, ["loop", "runs", "epochs", "s_per_epoch", "wall_s", "time_to_99.2_s", "mean_acc",
                       "min_acc", "peak_rss_mib", "speedup_vs_naive"]))
    path = write_json("train", {"summary": rows, "ours": ours_runs, "naive": naive_runs, "target": TARGET})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
