"""Cold-start ``mnist-cnn predict one.png``: whole process on ONNX Runtime vs the torch-only path.

Run: PYTHONPATH=. .venv/bin/python bench/bench_predict.py [--checkpoint runs/mnist] [--runs 7]

Each run is a fresh process, timed from outside from spawn to exit (wall) and by its CPU time (user+sys,
which load from other processes inflates less than wall time). Variants alternate round robin so that load
drift hits them alike: ``python -m mnist_cnn predict`` with the run's model.onnx, the same with
``--engine torch``, the installed ``mnist-cnn`` script when there is one, and a bare ``python -c pass``
(interpreter start-up, the floor). One ``python -X importtime`` run lists the costliest imports of the ONNX
path and checks that torch is not among them. Without a checkpoint, a fresh untrained tutorial CNN is used:
start-up time does not depend on the weights. Prints a table and writes bench/results/predict.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, median, table, write_json  # noqa: E402

TARGET_S = 0.5
IMAGE = ROOT / "samples" / "7_mnist_test_0017.png"


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole process; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_profile(cmd: list[str], env: dict, top: int = 8) -> tuple[list[dict], bool]:
    """The ``top`` costliest top-level imports (cumulative ms) of ``cmd`` and whether torch was imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    rows, torch_seen = [], False
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        torch_seen |= name.strip().split(".")[0] == "torch"
        if not name.startswith("  "):  # top level: indentation marks nested imports
            rows.append({"module": name.strip(), "cumulative_ms": round(int(cumulative) / 1000, 1)})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top], torch_seen


def variants(run: Path) -> dict[str, list[str]]:
    predict = ["predict", str(IMAGE), "--checkpoint", str(run)]
    found = {"python -c pass (floor)": [sys.executable, "-c", "pass"],
             "python -m mnist_cnn predict (onnx)": [sys.executable, "-m", "mnist_cnn", *predict],
             "python -m mnist_cnn predict --engine torch": [sys.executable, "-m", "mnist_cnn", *predict,
                                                            "--engine", "torch"]}
    script = Path(sys.executable).with_name("mnist-cnn")
    if script.is_file():
        found["mnist-cnn predict (onnx, installed script)"] = [str(script), *predict]
    return found


def prepare_run(where: str, tmp: Path) -> Path:
    """A run folder in ``tmp`` holding a copy of ``where``'s checkpoint (or an untrained one) and its model.onnx.

    A copy, so that the benchmark never rewrites the user's run folder."""
    import shutil

    from bench_infer import bench_checkpoint

    from mnist_cnn.export import export_onnx

    ckpt = bench_checkpoint(where, tmp)
    target = tmp / "checkpoints" / "best.pt"
    if ckpt != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ckpt, target)
    export_onnx(target)
    return tmp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist", help="run folder (default: runs/mnist; absent: an "
                                                               "untrained tutorial CNN)")
    p.add_argument("--runs", type=int, default=7, help="processes per variant (default: 7)")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run(args.checkpoint, Path(tmp))
        cmds = variants(run)
        for cmd in cmds.values():  # one untimed run each: the page cache holds every file afterwards
            timed(cmd, env)
        samples = {name: [] for name in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                samples[name].append(timed(cmd, env))
        imports, torch_seen = import_profile(cmds["python -m mnist_cnn predict (onnx)"], env)
    torch_wall = median([w for w, _ in samples["python -m mnist_cnn predict --engine torch"]])
    rows = [{"variant": name, "median_wall_s": round(median([w for w, _ in s]), 3),
             "min_wall_s": round(min(w for w, _ in s), 3), "median_cpu_s": round(median([c for _, c in s]), 3),
             "torch_over_this": round(torch_wall / median([w for w, _ in s]), 2)} for name, s in samples.items()]
    print(table(rows, ["variant", "median_wall_s", "min_wall_s", "median_cpu_s", "torch_over_this"]))
    print(f"\ncostliest imports on the ONNX path (python -X importtime, cumulative ms); torch imported: {torch_seen}")
    print(table(imports, ["module", "cumulative_ms"]))
    onnx_wall = rows[1]["median_wall_s"]
    print(f"\nONNX predict, whole cold process: {onnx_wall:.3f} s, median of {args.runs}; target {TARGET_S} s: "
          f"{'met' if onnx_wall <= TARGET_S else 'missed'}; {torch_wall / onnx_wall:.1f}x faster than torch-only")
    path = write_json("predict", {"image": str(IMAGE.relative_to(ROOT)), "runs": args.runs, "target_s": TARGET_S,
                                  "rows": rows, "imports": imports, "torch_imported_on_onnx_path": torch_seen,
                                  "samples": {k: [[round(w, 4), round(c, 4)] for w, c in v] for k, v in samples.items()}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
