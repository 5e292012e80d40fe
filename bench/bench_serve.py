"""Load on the HTTP API: a real ``mnist-cnn serve`` process on 127.0.0.1, 10,000 single-digit PNGs per level.

Run: python bench/bench_serve.py [--checkpoint runs/mnist] [--requests 10000] [--concurrency 32 64]
                                 [--repeats 3] [--workers N] [--threads N] [--engine auto|onnx|torch]

The client is aiohttp's, in this process: ``concurrency`` requests in flight, each a raw PNG body
(a MNIST test digit drawn black on white, as the drawing page sends it). Reports requests/s, p50/p99 latency,
errors (non-200 or transport failures), how many answers match the label, and the server's RSS after a warm-up
and after all the levels (all its processes: with ``--workers N``, gunicorn's arbiter and N workers); medians
of ``--repeats`` runs. The baseline, timed in the same run, is the same
Predictor called in-process on one thread (no HTTP), so the ratio shows what the server adds. The client shares
the 2 cores with the server: its own CPU time is reported too. Writes bench/results/serve-<engine>.json.
Targets (this 2-core machine): 0 errors, >= 1,000 req/s and p99 <= 50 ms at concurrency 32, RSS growth <= 50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import ROOT, machine, median, table, write_json  # noqa: E402

CORES = os.cpu_count() or 1
TARGETS = {"errors": 0, "req_per_s": 1000, "p99_ms": 50, "rss_growth_mib": 50}


def digit_pngs(n: int = 10_000) -> tuple[list[bytes], np.ndarray]:
    """The first n MNIST test digits as black-on-white PNGs (what a canvas export looks like) and their labels.

    All 10,000 test digits by default: every request of a level is a different image, so nothing that
    remembers answers could flatter the figures."""
    from mnist_cnn.data import load_mnist

    images, labels = load_mnist("test", limit=n)
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(255 - img).save(buf, "PNG")
        out.append(buf.getvalue())
    return out, labels


def ensure_checkpoint(where: str) -> str:
    """The checkpoint to serve; with none there, a quick 1-epoch run in a temp folder (said on stderr)."""
    if Path(where).exists():
        return where
    from mnist_cnn.config import TrainConfig
    from mnist_cnn.train import train

    run = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "run"
    print(f"note: no checkpoint at {where}; training a quick one in {run}", file=sys.stderr)
    train(TrainConfig(epochs=1, limit=12_000, run_dir=str(run), resume="never", save_every=0))
    return str(run)


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the server's worker processes)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that just ended
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far (robust to the machine's load)."""
    total = 0.0
    for p in tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, MiB."""
    total = 0.0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str, threads: int | None, engine: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "mnist_cnn", "serve", "--checkpoint", checkpoint, "--host", "127.0.0.1",
           "--port", str(port), "--engine", engine, "--workers", str(workers)] + (
           ["--threads", str(threads)] if threads else [])
    return launch(cmd, port, 1 + workers if workers > 1 else 1)  # gunicorn's arbiter and its workers


def launch(cmd: list[str], port: int, processes: int, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start a server command listening on 127.0.0.1:``port``; returns once /api/health answers and it runs
    ``processes`` processes in all."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200 and len(tree(proc.pid)) >= processes:
                time.sleep(1.0 if processes > 1 else 0.0)  # every worker's start-up done, not only the first one's
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as in a terminal; killed if it has not stopped within 20 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def load(base: str, images: list[bytes], labels: np.ndarray, n: int, concurrency: int,
               path: str = "/api/predict", ctype: str = "image/png") -> dict:
    """n requests, ``concurrency`` in flight; latency is per request, from send to the parsed JSON. Each request
    POSTs one of ``images`` to ``path`` as it is, with ``ctype`` as its content type (a multipart form's body
    and its boundary, say).

    aiohttp's client: it spends ~0.2 ms of CPU per request here where httpx's async client spends ~4 ms,
    which on 2 shared cores would measure the client rather than the server."""
    lat: list[float] = []
    errors = correct = 0
    todo = iter(range(n))
    headers = {"content-type": ctype}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def worker():
            nonlocal errors, correct
            for i in todo:  # one shared iterator: the tasks take the next request number in turn
                j = i % len(images)
                t0 = time.perf_counter()
                try:
                    async with http.post(path, data=images[j], headers=headers) as r:
                        ok = r.status == 200
                        right = ok and (await r.json())["digits"] == [int(labels[j])]
                        correct += right  # after the await: `correct += await …` would lose other tasks' updates
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                lat.append(time.perf_counter() - t0)
                errors += not ok

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ms = np.array(lat) * 1e3
    return {"req_per_s": n / wall, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "errors": errors, "correct": correct / n, "client_cpu_s": cpu, "wall_s": wall, "n": n}


def in_process_baseline(checkpoint: str, engine: str, images: list[bytes], n: int = 500) -> float:
    """Predictions/s of the same Predictor called directly on one thread (no HTTP, no JSON)."""
    from mnist_cnn.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, engine=engine)
    if predictor.engine.name == "torch":
        import torch

        torch.set_num_threads(1)  # as in the server
    for data in images[:50]:
        predictor.predict_image(data)
    t0 = time.process_time()
    for i in range(n):
        predictor.predict_image(images[i % len(images)])
    return n / (time.process_time() - t0)  # per CPU second: comparable with the server's CPU per request


def one_repeat(args, checkpoint: str, images, labels) -> tuple[list[dict], dict]:
    proc, base = start_server(checkpoint, args.threads, args.engine, args.workers)
    try:
        rss_start = rss_mib(proc.pid)
        asyncio.run(load(base, images, labels, 500, max(args.concurrency)))  # warm-up: caches, pools, arenas
        rss_warm = rss_mib(proc.pid)
        rows = []
        for c in args.concurrency:
            cpu0 = cpu_s(proc.pid)
            row = asyncio.run(load(base, images, labels, args.requests, c))
            row["server_cpu_ms"] = (cpu_s(proc.pid) - cpu0) / args.requests * 1e3
            rows.append({"concurrency": c, **row})
        engine = httpx.get(base + "/api/model").json()["engine"]
        mem = {"rss_start_mib": rss_start, "rss_warm_mib": rss_warm, "rss_end_mib": rss_mib(proc.pid),
               "engine": engine}
    finally:
        stop_server(proc)
    return rows, mem


def summarise(runs: list[tuple[list[dict], dict]], concurrency: list[int], baseline: float) -> list[dict]:
    out = []
    for k, c in enumerate(concurrency):
        rows = [r[0][k] for r in runs]
        growth = [r[1]["rss_end_mib"] - r[1]["rss_warm_mib"] for r in runs]
        rps = median([r["req_per_s"] for r in rows])
        out.append({"concurrency": c, "req/s": round(rps), "p50 ms": round(median([r["p50_ms"] for r in rows]), 1),
                    "p99 ms": round(median([r["p99_ms"] for r in rows]), 1),
                    "errors": sum(r["errors"] for r in rows), "correct": f"{median([r['correct'] for r in rows]):.3f}",
                    "server cpu ms/req": round(median([r["server_cpu_ms"] for r in rows]), 2),
                    "client cpu ms/req": round(median([r["client_cpu_s"] for r in rows]) / rows[0]["n"] * 1e3, 2),
                    "rss warm→end MiB": f"{median([r[1]['rss_warm_mib'] for r in runs]):.0f}→"
                                        f"{median([r[1]['rss_end_mib'] for r in runs]):.0f}",
                    "rss growth MiB": round(median(growth), 1),
                    "server cpu vs in-process": f"{median([r['server_cpu_ms'] for r in rows]) * baseline / 1e3:.2f}x",
                    "cpu-bound req/s": round(CORES * 1e3 / median([r["server_cpu_ms"] + r["client_cpu_s"] / r["n"] * 1e3
                                                                  for r in rows]))})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="runs/mnist", help="run folder or checkpoint (default: runs/mnist)")
    p.add_argument("--requests", type=int, default=10_000, help="requests per concurrency level (default: 10000)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[32, 64], help="levels (default: 32 64)")
    p.add_argument("--repeats", type=int, default=3, help="server starts, each running every level (default: 3)")
    p.add_argument("--workers", type=int, default=CORES, help=f"the server's --workers (default: the cores, {CORES})")
    p.add_argument("--threads", type=int, default=None, help="the server's --threads (default: its own)")
    p.add_argument("--engine", default="auto", choices=("auto", "onnx", "torch"), help="the server's --engine "
                   "(default: auto, ONNX Runtime when the run has model.onnx)")
    args = p.parse_args()

    checkpoint = ensure_checkpoint(args.checkpoint)
    images, labels = digit_pngs()
    baseline = in_process_baseline(checkpoint, args.engine, images)
    runs = [one_repeat(args, checkpoint, images, labels) for _ in range(args.repeats)]
    rows = summarise(runs, args.concurrency, baseline)
    print(f"serve: {args.requests:,} requests per level, median of {args.repeats} server runs, {args.workers} "
          f"worker process(es), engine "
          f"{runs[0][1]['engine']}; in-process baseline: the Predictor alone takes {1e3 / baseline:.2f} ms of CPU "
          f"per image ({baseline:.0f}/CPU-second)")
    print("cpu-bound req/s = cores / (server + client CPU per request): what the CPUs allow without other load")
    print(table(rows, list(rows[0])))
    first = rows[0]
    met = {"errors": first["errors"] == 0, "req_per_s": first["req/s"] >= TARGETS["req_per_s"],
           "p99_ms": first["p99 ms"] <= TARGETS["p99_ms"],
           "rss_growth_mib": max(r["rss growth MiB"] for r in rows) <= TARGETS["rss_growth_mib"]}
    print("targets at concurrency", first["concurrency"], ":",
          ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    path = write_json(f"serve-{runs[0][1]['engine']}", {
        "summary": rows, "targets": TARGETS, "met": met, "baseline_per_s": baseline, "cores": CORES,
        "workers": args.workers, "threads": args.threads,
        "runs": [{"levels": r, "memory": m} for r, m in runs]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
