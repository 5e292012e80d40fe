"""Soak: ``python bench/bench_soak.py --checkpoint RUN [--minutes 30] [--concurrency 64]``.

Starts ``mnist-cnn serve`` on loopback and keeps ``--concurrency`` clients busy for ``--minutes`` with a mix
of valid and invalid uploads (the samples, damaged images, text, empty bodies, decompression bombs, oversized
bodies), while another client asks /api/health every second. Passes with no 5xx, no failed health check and
the server's RSS growth after the warm-up under ``--rss-growth-mb``. Prints a summary; writes
bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "corpus")]
from bench.common import write_json  # noqa: E402


def payloads() -> list[tuple[str, bytes]]:
    """(kind, body): the samples and every non-special kind of the hostile corpus."""
    from make_corpus import kinds

    out = [("sample", p.read_bytes()) for p in sorted((ROOT / "samples").glob("*.png"))]
    out += [(name, make()) for name, (_, make) in kinds().items() if make is not None]
    out.append(("over_10MB", b"\0" * (10 * 2**20 + 1)))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(base: str, pid: int, minutes: float, concurrency: int, seed: int) -> dict:
    import httpx

    bodies, rng = payloads(), random.Random(seed)
    statuses: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    health = {"ok": 0, "failed": 0, "worst_ms": 0.0}
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()
    end = t0 + minutes * 60
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        async def client() -> None:
            while time.monotonic() < end:
                kind, body = rng.choice(bodies)
                try:
                    r = await http.post("/api/predict", content=body, headers={"content-type": "image/png"})
                    statuses[r.status_code] += 1
                except httpx.HTTPError as e:
                    errors[f"{type(e).__name__} ({kind})"] += 1

        async def watcher() -> None:
            while time.monotonic() < end:
                t = time.monotonic()
                try:
                    ok = (await http.get("/api/health", timeout=10)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                health["ok" if ok else "failed"] += 1
                health["worst_ms"] = max(health["worst_ms"], (time.monotonic() - t) * 1e3)
                rss.append((round(time.monotonic() - t0, 1), round(rss_mb(pid), 1)))
                await asyncio.sleep(1.0)

        await asyncio.gather(watcher(), *[client() for _ in range(concurrency)])
    return {"statuses": dict(statuses), "client_errors": dict(errors), "health": health, "rss_mb": rss,
            "requests": sum(statuses.values()), "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rss-growth-mb", type=float, default=200.0, help="allowed RSS growth after the first minute")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --workers 1: the process whose memory is measured is the one that serves
    server = subprocess.Popen([sys.executable, "-m", "mnist_cnn", "serve", "--checkpoint", args.checkpoint,
                               "--port", str(port), "--workers", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        for line in server.stderr:
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
        result = asyncio.run(soak(f"http://127.0.0.1:{port}", server.pid, args.minutes, args.concurrency, args.seed))
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[1]
    after_warmup = [m for t, m in result["rss_mb"] if t >= 60] or [m for _, m in result["rss_mb"]]
    growth = round(after_warmup[-1] - after_warmup[0], 1) if after_warmup else 0.0
    fives = sum(n for code, n in result["statuses"].items() if code >= 500)
    result.update(rss_growth_mb=growth, rss_max_mb=max(m for _, m in result["rss_mb"]), five_xx=fives,
                  tracebacks_in_log=log.count("Traceback"), minutes=args.minutes, concurrency=args.concurrency,
                  passed=fives == 0 and result["health"]["failed"] == 0 and growth <= args.rss_growth_mb)
    print(f"{result['requests']:,} requests in {result['seconds']} s at concurrency {args.concurrency}: "
          f"statuses {result['statuses']}, client errors {result['client_errors']}, 5xx {fives}; health "
          f"{result['health']}; RSS max {result['rss_max_mb']} MB, growth after warm-up {growth} MB; "
          f"tracebacks in the server log {result['tracebacks_in_log']}; {'PASS' if result['passed'] else 'FAIL'}")
    write_json("soak", {k: v for k, v in result.items() if k != "rss_mb"} | {"rss_mb_samples": result["rss_mb"][::10]})


if __name__ == "__main__":
    main()
