"""The reading install (the wheel without its ``train`` extra): venv size and cold ``mnist-cnn predict`` time.

    PYTHONPATH=. python bench/bench_install.py [--runs 7] [--venv DIR]

Builds the wheel from this tree and installs it into a fresh venv (or measures ``--venv``, such a venv made
before), then: the venv's size on disk (every file's bytes, pip and setuptools included) and its largest
packages; and the wall time of ``mnist-cnn predict samples/7_mnist_test_0017.png`` as a new process each time,
from a folder with no runs/ (so the best shipped model answers), median of ``--runs`` after one unmeasured run
that fills the page cache, with the CPU time (user + system) of each run: on a busy machine the wall time
follows the load, the CPU time much less. Prints a table and writes bench/results/install.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, median, outside_env, reading_venv, table, write_json

SAMPLE = ROOT / "samples" / "7_mnist_test_0017.png"


def size_of(folder: Path) -> int:
    return sum((Path(root) / f).lstat().st_size for root, _, files in os.walk(folder) for f in files)


def largest_packages(venv: Path, n: int = 8) -> dict[str, float]:
    """MiB of the ``n`` largest entries of site-packages."""
    site = next(venv.glob("lib/python*/site-packages"))
    sizes = {p.name: size_of(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
    return {k: round(v / 2**20, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:n]}


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_predict(venv: Path, runs: int, cwd: Path) -> tuple[list[float], list[float], str]:
    """(wall seconds, CPU seconds) of each measured run, and the line that names the model."""
    env = outside_env()
    times, cpu, out = [], [], None
    for i in range(runs + 1):
        t0, c0 = time.perf_counter(), child_cpu()
        out = subprocess.run([str(venv / "bin/mnist-cnn"), "predict", str(SAMPLE)], capture_output=True,
                             text=True, cwd=cwd, env=env, check=True)
        if i:  # the first run only fills the page cache
            times.append(time.perf_counter() - t0)
            cpu.append(child_cpu() - c0)
    return times, cpu, out.stderr.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="measured predict runs (default: 7)")
    p.add_argument("--venv", default=None, help="measure this reading-install venv instead of making one")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(args.venv) if args.venv else reading_venv(Path(tmp))
        probe = subprocess.run([str(venv / "bin/python"), "-c", "import torch"], capture_output=True,
                               env=outside_env())
        has_torch = probe.returncode == 0
        load = os.getloadavg()[0]
        times, cpu, said = cold_predict(venv, args.runs, Path(tmp))
        size = size_of(venv)
        packages = largest_packages(venv)
    row = {"venv MiB": f"{size / 2**20:.0f}", "torch": "yes" if has_torch else "no",
           "predict s (median)": f"{median(times):.3f}", "min": f"{min(times):.3f}", "max": f"{max(times):.3f}",
           "CPU s (median)": f"{median(cpu):.3f}", "runs": len(times), "load": f"{load:.1f}"}
    print(table([row], list(row)))
    print("largest packages (MiB): " + ", ".join(f"{k} {v}" for k, v in packages.items()))
    print(f"model: {said}")
    path = write_json("install", {"venv_bytes": size, "has_torch": has_torch, "predict_seconds": times,
                                  "predict_median_s": median(times), "predict_cpu_seconds": cpu,
                                  "predict_cpu_median_s": median(cpu), "load_before": load, "largest_packages_mib": packages,
                                  "model_line": said})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
