"""Shared helpers for the benchmarks: machine description, medians, a table printer, JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        simd = sorted({f for f in flags.split() if f.startswith(("avx512", "amx")) or f in ("avx2", "avx")})
    except (OSError, StopIteration):
        simd = []
    info = {"cpu": cpu, "cores": os.cpu_count(), "simd": " ".join(simd), "python": platform.python_version(),
            "date": _dt.date.today().isoformat(), "load_avg_1m": os.getloadavg()[0], "commit": commit()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def commit(short: bool = True, ignore: str = "") -> str:
    """The code measured: HEAD's hash, with -dirty when tracked files (other than under ``ignore``) differ."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    paths = ["--", ".", f":(exclude){ignore}"] if ignore else []
    head = git("rev-parse", *(["--short"] if short else []), "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no", *paths) else "")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "command": " ".join(sys.argv), **payload}, indent=2) + "\n")
    return path


# Runs a Python module or script in a child process and reports its peak RSS (KiB) on stderr at exit: VmHWM,
# the peak of this program's own memory. Not getrusage's ru_maxrss: Linux carries it across exec, so a child
# started by a large parent (a benchmark that imported torch) reports the parent's peak when it is higher.
PEAK_RSS_WRAPPER = (
    "import atexit, runpy, sys\n"
    "hwm = lambda: next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "atexit.register(lambda: print(f'PEAK_RSS_KB {hwm()}', file=sys.stderr))\n"
    "target = sys.argv[1]; sys.argv = sys.argv[1:]\n"
    "runpy.run_path(target, run_name='__main__') if target.endswith('.py') else "
    "runpy.run_module(target, run_name='__main__', alter_sys=True)\n"
)


def run_measured(target: str, args: list[str], env: dict | None = None, timeout: float = 3600,
                 python: str = sys.executable):
    """(wall seconds, peak RSS MiB, stdout, stderr) of ``python target args`` as a whole process."""
    import time

    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", PEAK_RSS_WRAPPER, target, *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{target} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    rss = [int(l.split()[1]) for l in proc.stderr.splitlines() if l.startswith("PEAK_RSS_KB")]
    return wall, (rss[-1] / 1024 if rss else float("nan")), proc.stdout, proc.stderr


def reading_venv(dest: Path) -> Path:
    """A fresh venv in ``dest``/venv holding the wheel built from this tree without its ``train`` extra (the
    reading install); pip fetches the base dependencies."""
    dist, venv = dest / "dist", dest / "venv"
    import importlib.util

    # Build with this venv's setuptools when it has one (offline, seconds); else pip fetches it (Python >= 3.12
    # venvs come without setuptools).
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    wheel = max(dist.glob("mnist_cnn-*.whl"), key=lambda p: p.stat().st_mtime)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=1200, env=outside_env())
    return venv


def outside_env() -> dict:
    """The environment without PYTHONPATH: a venv's pip and commands must see that venv only, not this tree."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
