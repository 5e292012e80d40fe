"""Connection limits of a real ``mnist-cnn serve``: ``python bench/bench_limits.py --checkpoint RUN``.

Measures what the server does with (1) a 200 MB request header, (2) 300 slowloris connections that trickle a
header line every 2 s, (3) a stalled upload, (4) 100 aborted uploads: the answer, the time to it, the server's
RSS growth and the lines its log gained. Prints a table; writes bench/results/limits.json.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import table, write_json  # noqa: E402

HEAD = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"


def rss_mb(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def first_line(sock: socket.socket) -> str:
    try:
        data = sock.recv(4096)
    except OSError as e:
        return type(e).__name__
    return data.split(b"\r\n", 1)[0].decode() if data else "closed"


def big_header(addr) -> str:
    with socket.create_connection(addr, timeout=60) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(200):
                s.sendall(b"a" * 2**20)
        except OSError:
            pass
        return first_line(s)


def slowloris(addr, n: int = 300, seconds: float = 40.0) -> str:
    socks = []
    for _ in range(n):
        s = socket.create_connection(addr, timeout=5)
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        s.setblocking(False)
        socks.append(s)
    open_, t0 = set(range(n)), time.monotonic()
    while open_ and time.monotonic() - t0 < seconds:
        for i in list(open_):
            try:
                socks[i].sendall(b"X-a: b\r\n")
                if socks[i].recv(1) == b"":
                    open_.discard(i)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)
        time.sleep(2.0)
    for s in socks:
        s.close()
    return f"{n - len(open_)} of {n} closed within {time.monotonic() - t0:.0f} s"


def stalled(addr) -> str:
    with socket.create_connection(addr, timeout=120) as s:
        s.sendall(HEAD + b"Content-Length: 100000\r\n\r\n" + b"\x89PNG")
        return first_line(s)


def aborted(addr, n: int = 100) -> str:
    for _ in range(n):
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(HEAD + b"Content-Length: 100000\r\n\r\n" + b"\0" * 1000)
    time.sleep(1.0)
    return f"{n} aborted"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist")
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = ROOT / "bench" / "results" / "limits-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        # --workers 1: the process whose memory is measured is the one that serves
        server = subprocess.Popen([sys.executable, "-m", "mnist_cnn", "serve", "--checkpoint", args.checkpoint,
                                   "--port", str(port), "--workers", "1"], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT)
        addr, rows = ("127.0.0.1", port), []
        try:
            while "Uvicorn running" not in log_path.read_text():
                time.sleep(0.2)
            for name, probe in (("200 MB header", big_header), ("slowloris", slowloris), ("stalled upload", stalled),
                                ("aborted uploads", aborted)):
                before, lines, t0 = rss_mb(server.pid), len(log_path.read_text().splitlines()), time.monotonic()
                answer = probe(addr)
                rows.append({"probe": name, "answer": answer, "seconds": round(time.monotonic() - t0, 1),
                             "rss_growth_mb": round(rss_mb(server.pid) - before, 1),
                             "log_lines": len(log_path.read_text().splitlines()) - lines})
        finally:
            server.terminate()
            server.wait(timeout=60)
    text = log_path.read_text()
    print(table(rows, ["probe", "answer", "seconds", "rss_growth_mb", "log_lines"]))
    print(f"tracebacks in the server log: {text.count('Traceback')}")
    log_path.unlink()
    write_json("limits", {"rows": rows, "tracebacks": text.count("Traceback")})


if __name__ == "__main__":
    main()
