"""Library or own code, decided by measurement in one run: the upload parser and the multi-worker supervisor.

Run: python bench/bench_serve_libs.py [--checkpoint strong] [--engine auto] [--requests 10000]
         [--large-requests 200] [--repeats 3] [--concurrency 32 64] [--upload-concurrency 32]

1. Upload parsing, one server process (``serve --workers 1``'s settings) holding both routes
   (serve_libs_app.upload_app): /api/predict reads the form with serve.read_upload, /api/predict-uploadfile
   with FastAPI's ``file: UploadFile``; the rest of the two routes is the same code. Multipart uploads of the 10
   sample PNGs and of a 1.6 MB photo-like PNG, the two routes alternating round by round; then a 40 MB upload
   (over the 10 MB limit), with its length declared and chunked, each to a fresh server: status, how soon
   it is answered, how much the client had sent by then, what the server wrote (UploadFile spools to disk)
   and its peak RSS.
2. Two worker processes: ``mnist-cnn serve --workers 2`` (workers.py: gunicorn's arbiter since the own
   supervisor lost this comparison), uvicorn's own ``workers=2`` and gunicorn run from its command line with
   the project's worker class, each serving the same app (serve_libs_app.app) with the same HTTP settings
   and threads. All up at once, rounds alternating, each a fresh set of keep-alive
   connections (bench_serve.load, raw PNG bodies of MNIST test digits); the busiest worker's share of the
   workers' CPU time shows how evenly they were loaded (50 %: even). Then one worker of each is killed
   (SIGKILL), once per repeat: seconds until a replacement process exists, and until a new connection (one
   every ~0.1 s asks /api/health) is answered by it; how many of those requests failed meanwhile.

Own code is kept only where it wins clearly: >= 5 % more requests/s (or the oversized upload refused with
much less read); a one-line verdict per part says which, with the figure. Writes bench/results/serve_libs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import io
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import cpu_s, digit_pngs, free_port, launch, load, start_server, stop_server, tree  # noqa: E402
from common import ROOT, machine, median, table, write_json  # noqa: E402

from mnist_cnn.engine import usable_cores  # noqa: E402
from mnist_cnn.serve import MAX_UPLOAD_BYTES  # noqa: E402

SAMPLES = sorted((ROOT / "samples").glob("*.png"))
BOUNDARY = "mnistcnnbench7MA4YWxkTrZu0gW"
FORM = f"multipart/form-data; boundary={BOUNDARY}"
OVERSIZED = 4 * MAX_UPLOAD_BYTES
CLEAR_WIN = 1.05  # own code is kept only when it is at least this much better
ROUTES = {"own read_upload": "/api/predict", "FastAPI UploadFile": "/api/predict-uploadfile"}


def form(data: bytes, filename: str) -> bytes:
    """A multipart body with one ``file`` field, as a browser's or curl -F's."""
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def photo_png(sample: Path, size=(1280, 960)) -> bytes:
    """A phone photo of a digit on paper (~1.6 MB PNG): the sample, large and blurred, dark ink on unevenly lit,
    grainy paper."""
    w, h = size
    ink = Image.open(sample).convert("L").resize((h * 2 // 3,) * 2, Image.BICUBIC).filter(ImageFilter.GaussianBlur(3))
    ink = 1 - np.asarray(ink, np.float32) / 255
    y, x = np.mgrid[0:h, 0:w]
    paper = 170 + 60 * (x / w) * (1 - 0.4 * y / h)
    top, left = (h - ink.shape[0]) // 2, (w - ink.shape[1]) // 2
    paper[top:top + ink.shape[0], left:left + ink.shape[1]] *= 1 - 0.75 * ink
    rgb = paper[..., None] * np.array([1.0, 0.97, 0.9]) + np.random.default_rng(0).normal(0, 2.0, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def app_env(args, threads: int | None) -> dict:
    return {"BENCH_CHECKPOINT": args.checkpoint, "BENCH_ENGINE": args.engine, "BENCH_THREADS": str(threads or "")}


def workers_of(pid: int) -> list[int]:
    """The worker processes of a server: its children, less multiprocessing's resource tracker."""
    def tracker(p: int) -> bool:
        try:
            return "resource_tracker" in Path(f"/proc/{p}/cmdline").read_text()
        except OSError:  # it just ended
            return True

    return [p for p in tree(pid)[1:] if not tracker(p)]


def rotate(xs: list, k: int) -> list:
    return xs[k % len(xs):] + xs[:k % len(xs)]


# ---------------------------------------------------------------- part 1: the upload parser
def upload_server(args):
    port = free_port()
    return launch([sys.executable, "bench/serve_libs_app.py", "upload", str(port), "1"], port, 1,
                  env=app_env(args, None))  # threads as `serve --workers 1`: one per usable core


def load_round(proc, base, bodies, labels, n, concurrency, path, ctype) -> dict:
    cpu0 = cpu_s(proc.pid)
    row = asyncio.run(load(base, bodies, labels, n, concurrency, path=path, ctype=ctype))
    row["server_cpu_ms"] = (cpu_s(proc.pid) - cpu0) / n * 1e3
    return row


def oversized(proc, base, path: str, chunked: bool) -> dict:
    """A 40 MB form sent in 64 KiB pieces, the server's answer read as it comes; the server's RSS sampled meanwhile."""
    port, pid = int(base.rsplit(":", 1)[1]), proc.pid
    body = form(np.random.default_rng(0).bytes(OVERSIZED), "huge.png")
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {FORM}\r\n"
            + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n") + "\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sent, answered, done, peak = 0, threading.Event(), threading.Event(), [vm_rss_mib(pid)]
    rss0, wrote0 = peak[0], written(pid)

    def send():
        nonlocal sent
        try:
            sock.sendall(head)
            for i in range(0, len(body), 1 << 16):
                if answered.is_set():
                    return
                piece = body[i:i + (1 << 16)]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection: it read no more
            pass

    def sample():
        while not done.wait(0.005):
            peak.append(vm_rss_mib(pid))

    threads = [threading.Thread(target=send), threading.Thread(target=sample)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    reply = b""
    try:
        while b"\r\n" not in reply and (chunk := sock.recv(4096)):
            reply += chunk
    except OSError:
        pass
    seconds, sent_then = time.perf_counter() - t0, sent
    answered.set()  # the client stops sending
    time.sleep(0.2)  # what the server still does right after answering counts too
    done.set()
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    for t in threads:
        t.join()
    status = reply.split(b" ", 2)[1].decode() if reply.count(b" ") >= 2 else "none"
    return {"status": status, "answered after s": round(seconds, 2), "client had sent MB": round(sent_then / 1e6, 1),
            "server wrote MB": round((written(pid) - wrote0) / 1e6, 1), "server RSS before MiB": round(rss0),
            "server peak RSS MiB": round(max(peak))}


def proc_field(pid: int, file: str, key: str) -> int:
    return int(next(l for l in Path(f"/proc/{pid}/{file}").read_text().splitlines() if l.startswith(key)).split()[1])


def written(pid: int) -> int:
    """Bytes the process has written (wchar: files and sockets alike; the answers here are small)."""
    return proc_field(pid, "io", "wchar:")


def vm_rss_mib(pid: int) -> float:
    """The resident memory of one process (cheaper than bench_serve.rss_mib's walk of its descendants)."""
    return proc_field(pid, "status", "VmRSS:") / 1024


def part_uploads(args) -> dict:
    samples = [p.read_bytes() for p in SAMPLES]
    sample_labels = np.array([int(p.name[0]) for p in SAMPLES])
    photo = photo_png(ROOT / "samples" / "7_mnist_test_0017.png")
    with ThreadPoolExecutor() as pool:  # the load server and one fresh server per oversized probe, started at once
        servers = list(pool.map(lambda _: upload_server(args), range(1 + 2 * len(ROUTES))))
    (proc, base), probes = servers[0], servers[1:]
    try:
        photo_reads = httpx.post(base + "/api/predict", files={"file": ("photo.png", photo, "image/png")},
                                 timeout=60).json()["digits"]
        images = {"sample PNG (0.4-0.8 kB)": ([form(d, p.name) for d, p in zip(samples, SAMPLES)], sample_labels,
                                              args.requests),
                  f"photo PNG ({len(photo) / 2**20:.1f} MB)": ([form(photo, "photo.png")],
                                                               np.array(photo_reads), args.large_requests)}
        for route in ROUTES.values():  # warm-up: both routes, both sizes
            for bodies, labels, n in images.values():
                load_round(proc, base, bodies, labels, max(1, min(n // 10, 200)), args.upload_concurrency, route, FORM)
        runs = {(v, k): [] for v in ROUTES for k in images}
        for r in range(args.repeats):
            for kind, (bodies, labels, n) in images.items():
                for variant in rotate(list(ROUTES), r):
                    runs[variant, kind].append(load_round(proc, base, bodies, labels, n, args.upload_concurrency,
                                                          ROUTES[variant], FORM))
        rows = [{"variant": v, "image": k, **summary(rs)} for (v, k), rs in runs.items()]
        probe_rows = []
        for (variant, chunked), (pproc, pbase) in zip([(v, c) for v in ROUTES for c in (False, True)], probes):
            probe_rows.append({"variant": variant, "length": "chunked" if chunked else "declared",
                               **oversized(pproc, pbase, ROUTES[variant], chunked)})
    finally:
        for p, _ in servers:
            stop_server(p)
    return {"load": rows, "oversized": probe_rows, "photo_reads": photo_reads, "runs": {
        f"{v} | {k}": rs for (v, k), rs in runs.items()}}


def summary(rows: list[dict]) -> dict:
    """Medians over the rounds of bench_serve.load's figures; errors summed."""
    def mid(key: str, digits: int | None = 1):
        return round(median([r[key] for r in rows]), digits)

    return {"req/s": mid("req_per_s", None), "p50 ms": mid("p50_ms"), "p99 ms": mid("p99_ms"),
            "errors": sum(r["errors"] for r in rows), "correct": f"{median([r['correct'] for r in rows]):.3f}",
            "server cpu ms/req": mid("server_cpu_ms", 2)}


def upload_verdict(part: dict) -> str:
    """Kept when clearly faster, or when it refuses the declared oversized upload before half of it is sent and
    is not clearly slower on either image; else replaced."""
    by = {(r["variant"], r["image"]): r for r in part["load"]}
    kinds = list(dict.fromkeys(r["image"] for r in part["load"]))
    ratios = {k: by["own read_upload", k]["req/s"] / max(by["FastAPI UploadFile", k]["req/s"], 1) for k in kinds}
    big = {r["variant"]: r for r in part["oversized"] if r["length"] == "declared"}
    own, lib = big["own read_upload"], big["FastAPI UploadFile"]
    not_slower = min(ratios.values()) >= 1 / CLEAR_WIN
    faster = max(ratios.values()) >= CLEAR_WIN and not_slower
    refuses_earlier = own["status"] == "413" and own["client had sent MB"] < lib["client had sent MB"] / 2
    figures = (", ".join(f"{ratios[k]:.2f}x UploadFile's req/s on the {k}" for k in kinds)
               + f"; a declared 40 MB upload answered {own['status']} after {own['client had sent MB']} MB sent "
                 f"(UploadFile: {lib['status']} after {lib['client had sent MB']} MB, {lib['server wrote MB']} MB "
                 f"written by the server)")
    kept = faster or (refuses_earlier and not_slower)
    return f"own read_upload: {'kept' if kept else 'replaced by UploadFile'}, because {figures}"


# ---------------------------------------------------------------- part 2: the supervisor
def supervisors(args) -> dict:
    """How to start each two-worker server: (name, a function returning (process, base URL))."""
    env = app_env(args, max(1, usable_cores() // 2))  # threads per worker as `serve --workers 2` gives them

    def uvicorn_workers():
        port = free_port()
        return launch([sys.executable, "bench/serve_libs_app.py", "app", str(port), "2"], port, 3, env=env)

    def gunicorn_workers():
        port = free_port()
        return launch([sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class",
                       "mnist_cnn.workers.Worker", "--pythonpath", "bench", "--bind", f"127.0.0.1:{port}",
                       "--log-level", "warning", "--graceful-timeout", "5", "serve_libs_app:app()"], port, 3, env=env)

    out = {"serve --workers 2": lambda: start_server(args.checkpoint, None, args.engine, 2),
           "uvicorn workers=2": uvicorn_workers}
    if importlib.util.find_spec("gunicorn"):
        out["gunicorn -w 2 UvicornWorker"] = gunicorn_workers
    return out


def spread_round(proc, base, images, labels, n, concurrency) -> dict:
    workers = workers_of(proc.pid)
    before = {w: cpu_s(w) for w in workers}
    row = load_round(proc, base, images, labels, n, concurrency, "/api/predict", "image/png")
    used = [cpu_s(w) - before[w] for w in workers]
    row["busiest_worker_share"] = max(used) / max(sum(used), 1e-9)
    return row


def server_side_owner(port: int) -> dict[int, int]:
    """Established connections to ``port`` on 127.0.0.1: {client's port: pid of the process that holds the
    server's end}, from /proc/net/tcp and each process's open files."""
    owner_of_inode = {}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:  # a process or file that just went away
            continue
        if target.startswith("socket:["):
            owner_of_inode[target[8:-1]] = int(fd.parts[2])
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if int(local.split(":")[1], 16) == port and state == "01" and inode in owner_of_inode:  # 01: established
            found[int(fields[2].split(":")[1], 16)] = owner_of_inode[inode]
    return found


def answered_by(port: int) -> int | None:
    """The pid of the worker that answers /api/health on a new connection; None when the request fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        response.read()
        return server_side_owner(port).get(conn.sock.getsockname()[1]) if response.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def recovery(proc, base, limit_s: float = 60) -> dict:
    """Kill one worker; seconds until a replacement process exists (looked for every 10 ms) and until it
    answers a new connection (one every ~0.1 s), and how many of those requests failed meanwhile."""
    port = int(base.rsplit(":", 1)[1])
    victim, *others = workers_of(proc.pid)
    new, started, stop = set(), [], threading.Event()

    def watch():
        while not stop.wait(0.01) and not new:
            new.update(set(workers_of(proc.pid)) - set(others) - {victim})
        started.append(time.monotonic() - t0)

    os.kill(victim, signal.SIGKILL)
    t0, failed, probes, answered = time.monotonic(), 0, 0, None
    watcher = threading.Thread(target=watch)
    watcher.start()
    while time.monotonic() - t0 < limit_s:
        owner = answered_by(port)
        probes, failed = probes + 1, failed + (owner is None)
        if owner is not None and owner in new:
            answered = round(time.monotonic() - t0, 2)
            break
        time.sleep(0.1)
    stop.set()
    watcher.join()
    return {"new worker process after s": round(started[0], 2) if new else None,
            "answered by it after s": answered if answered is not None else f"> {limit_s:.0f}",
            "failed requests": failed, "requests": probes}


def kill_summary(kills: list[dict]) -> dict:
    """Medians of the seconds (each kill's figure where one never recovered), the requests summed."""
    def seconds(key: str):
        xs = [k[key] for k in kills]
        return median(xs) if all(isinstance(x, (int, float)) for x in xs) else " / ".join(map(str, xs))

    return {key: seconds(key) for key in ("new worker process after s", "answered by it after s")} | {
        key: sum(k[key] for k in kills) for key in ("failed requests", "requests")}


def part_supervisors(args) -> dict:
    images, labels = digit_pngs(min(args.requests, 10_000))
    starts = supervisors(args)
    with ThreadPoolExecutor() as pool:
        servers = dict(zip(starts, pool.map(lambda start: start(), starts.values())))
    try:
        for proc, base in servers.values():  # warm-up: caches, pools, every worker
            load_round(proc, base, images, labels, min(args.requests, 500), max(args.concurrency), "/api/predict",
                       "image/png")
        runs = {(v, c): [] for v in servers for c in args.concurrency}
        for r in range(args.repeats):
            for c in args.concurrency:
                for v in rotate(list(servers), r):
                    runs[v, c].append(spread_round(*servers[v], images, labels, args.requests, c))
        rows = [{"variant": v, "concurrency": c, **summary(rs),
                 "busiest worker %": round(100 * median([r["busiest_worker_share"] for r in rs]), 1)}
                for (v, c), rs in runs.items()]
        kills = {v: [] for v in servers}
        for r in range(args.repeats):
            for v in rotate(list(servers), r):
                kills[v].append(recovery(*servers[v]))
        kill_rows = [{"variant": v, **kill_summary(rs)} for v, rs in kills.items()]
    finally:
        for proc, _ in servers.values():
            left = tree(proc.pid)
            stop_server(proc)
            for pid in left[1:]:  # a worker its supervisor left behind (none expected)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return {"load": rows, "kill": kill_rows, "kills": kills, "runs": {f"{v} | {c}": rs for (v, c), rs in runs.items()}}


def supervisor_verdict(part: dict, concurrency: int) -> str:
    rows = {r["variant"]: r for r in part["load"] if r["concurrency"] == concurrency}
    own = rows.pop("serve --workers 2")
    name, best = max(rows.items(), key=lambda kv: kv[1]["req/s"])
    ratio = own["req/s"] / max(best["req/s"], 1)
    return (f"serve --workers 2: {'as fast as' if ratio >= 1 / CLEAR_WIN else 'slower than'} the library alternatives: "
            f"{own['req/s']:,} against {best['req/s']:,} req/s ({ratio:.2f}x), p99 {own['p99 ms']} against "
            f"{best['p99 ms']} ms at concurrency {concurrency} ({name}, the faster library alternative)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="strong", help="what serve --checkpoint takes (default: the shipped "
                   "'strong' model)")
    p.add_argument("--engine", default="auto", choices=("auto", "onnx", "torch"))
    p.add_argument("--requests", type=int, default=10_000, help="requests per round, small images (default: 10000)")
    p.add_argument("--large-requests", type=int, default=200, help="requests per round of the photo (default: 200)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of every variant (default: 3)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[32, 64], help="part 2's levels (default: 32 64)")
    p.add_argument("--upload-concurrency", type=int, default=32, help="part 1's level (default: 32)")
    args = p.parse_args()

    info = machine()
    header = f"{info['cpu']} ({info['cores']} cores; {info['simd'] or 'no AVX'}), load {info['load_avg_1m']:.1f}, " \
             f"commit {info['commit']}; medians of {args.repeats} rounds, variants alternating"
    uploads = part_uploads(args)
    print(f"1. upload parsing, one server process, concurrency {args.upload_concurrency}: {header}")
    print(table(uploads["load"], list(uploads["load"][0])))
    print(f"a {OVERSIZED // 2**20} MB upload (limit {MAX_UPLOAD_BYTES // 2**20} MB), each to a fresh server:")
    print(table(uploads["oversized"], list(uploads["oversized"][0])))
    uploads["verdict"] = upload_verdict(uploads)
    print(uploads["verdict"], "\n")

    sup = part_supervisors(args)
    print(f"2. two worker processes: {header}")
    if "gunicorn -w 2 UvicornWorker" not in {r["variant"] for r in sup["load"]}:
        print("(gunicorn is not installed: `pip install gunicorn` adds it)")
    print(table(sup["load"], list(sup["load"][0])))
    print(f"kill -9 of one worker (median of {args.repeats}; failed requests: summed), a new connection every ~0.1 s:")
    print(table(sup["kill"], list(sup["kill"][0])))
    sup["verdict"] = supervisor_verdict(sup, args.concurrency[0])
    print(sup["verdict"])
    path = write_json("serve_libs", {"uploads": uploads, "supervisors": sup, "clear_win": CLEAR_WIN,
                                     "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
