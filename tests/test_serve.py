"""The HTTP API: ``PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_serve.py``.

In-process through FastAPI's TestClient (every endpoint, every error status, hostile bytes), then a real
``mnist-cnn serve`` process on a free loopback port. The model is the session's small trained run.
"""

from __future__ import annotations

import base64
import io
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import ROOT, SAMPLES, run_cli
from mnist_cnn.predict import Predictor
from mnist_cnn.preprocess import MAX_PIXELS
from mnist_cnn.serve import MAX_UPLOAD_BYTES, PredictResponse, create_app

SAMPLE_FILES = sorted(SAMPLES.glob("*.png"))


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor.from_checkpoint(trained_run)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor=predictor)) as c:  # the with block runs the lifespan
        yield c


def post_file(client, data: bytes, name: str = "digit.png", ctype: str = "image/png"):
    return client.post("/api/predict", files={"file": (name, data, ctype)})


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- the happy paths
def test_health_and_model(client, predictor):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["engine"] == predictor.engine.name
    info = client.get("/api/model").json()
    meta = predictor.describe()
    assert info["model_name"] == "tutorial" and info["parameters"] == 93_322
    assert info["step"] == meta["step"] > 0
    assert info["test_accuracy"] == meta["best_acc"] and 0.9 < info["test_accuracy"] <= 1.0


def test_both_engines_serve_the_same_answers(client, trained_run):
    torch_predictor = Predictor.from_checkpoint(trained_run, engine="torch")
    with TestClient(create_app(predictor=torch_predictor)) as torch_client:
        assert torch_client.get("/api/model").json()["parameters"] == 93_322
        for path in SAMPLE_FILES[:4]:
            a, b = (post_file(c, path.read_bytes()).json() for c in (client, torch_client))
            assert a["digits"] == b["digits"]
            assert np.allclose(a["probabilities"], b["probabilities"], atol=1e-4)


def test_predict_reads_the_samples_like_the_predictor(client, predictor):
    """The API answers exactly what the CLI's Predictor answers (how well that reads is tested elsewhere)."""
    for path in SAMPLE_FILES:
        r = post_file(client, path.read_bytes(), path.name)
        assert r.status_code == 200, r.text
        body = PredictResponse.model_validate(r.json())  # the documented schema holds
        expected = predictor.predict_file(path)
        assert body.source == path.name and body.digits == expected.digits
        assert np.allclose(body.probabilities, expected.probabilities, atol=1e-5)
        assert np.allclose(np.sum(body.probabilities, axis=1), 1.0, atol=1e-4)
        assert body.confidence == pytest.approx([max(p) for p in body.probabilities])
        assert body.timing_ms.total >= body.timing_ms.predict > 0


def test_inputs_png_is_what_the_model_saw(client, predictor):
    path = SAMPLES / "4_mnist_test_0006.png"
    body = post_file(client, path.read_bytes()).json()
    (url,) = body["inputs_png"]
    assert url.startswith("data:image/png;base64,")
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert seen.shape == (28, 28)
    expected = np.round(predictor.predict_file(path).inputs[0] * 255)
    assert np.abs(seen.astype(int) - expected.astype(int)).max() <= 1


def test_raw_body_and_multipart_agree(client):
    data = (SAMPLES / "9_mnist_test_0009.png").read_bytes()
    multipart = post_file(client, data).json()
    for ctype in ("image/png", "application/octet-stream"):
        raw = client.post("/api/predict", content=data, headers={"content-type": ctype}).json()
        assert raw["digits"] == multipart["digits"] and raw["probabilities"] == multipart["probabilities"]
        assert raw["source"] == "upload"


def test_other_formats_and_modes(client, predictor):
    """What a browser or phone sends: transparent canvas PNGs, JPEG, GIF, BMP, 16-bit, CMYK, WebP."""
    path = SAMPLES / "3_mnist_test_0030.png"
    grey = Image.open(path).convert("L")
    expected = predictor.predict_file(path).digits
    ink_on_clear = Image.new("RGBA", grey.size, (0, 0, 0, 0))
    ink_on_clear.putalpha(grey)  # black ink on a transparent canvas, as the page may export it
    variants = {"transparent.png": png_bytes(ink_on_clear),
                "white.jpg": png_bytes(Image.eval(grey, lambda v: 255 - v).convert("RGB"), "JPEG", quality=95),
                "anim.gif": png_bytes(grey.convert("P"), "GIF"), "bitmap.bmp": png_bytes(grey, "BMP"),
                "sixteen.png": png_bytes(grey.convert("I;16")), "cmyk.jpg": png_bytes(grey.convert("CMYK"), "JPEG"),
                "big.webp": png_bytes(grey.resize((280, 280)), "WEBP", quality=95)}
    for name, data in variants.items():
        r = post_file(client, data, name, "application/octet-stream")
        assert r.status_code == 200, (name, r.text)
        assert r.json()["digits"] == expected, name


def test_blank_image_reads_no_digit(client):
    body = post_file(client, png_bytes(Image.new("L", (280, 280), 255))).json()
    assert body["number"] == "" and body["digits"] == [] and body["inputs_png"] == []


# ---------------------------------------------------------------- errors: 4xx with a JSON detail, never a 500
def png_with_header(width: int, height: int, payload: bytes) -> bytes:
    """A grey PNG that declares width×height and carries ``payload`` as its (zlib) image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", payload) + chunk(b"IEND", b"")


def real_bomb() -> bytes:
    """A valid PNG of white pixels, just over MAX_PIXELS (where Pillow itself only warns), in ~70 kB."""
    side = math.isqrt(MAX_PIXELS) + 64
    z = zlib.compressobj(9)
    row = b"\0" + b"\xff" * side  # filter byte + pixels
    payload = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return png_with_header(side, side, payload)


def chunked(data: bytes, size: int = 1 << 20):
    for i in range(0, len(data), size):  # a generator body: sent chunked, with no Content-Length to trust
        yield data[i:i + size]


SAMPLE = (SAMPLES / "7_mnist_test_0017.png").read_bytes()
def raw(body, ctype: str = "image/png") -> dict:
    return {"content": body, "headers": {"content-type": ctype}}


BIG = MAX_UPLOAD_BYTES + 1
ERROR_CASES = {  # (status, request arguments); built when the test runs, not at import (the bomb takes a while)
    "empty body": (400, lambda: raw(b"")),
    "text": (415, lambda: raw(b"hello, not an image", "text/plain")),
    "truncated png": (422, lambda: raw(SAMPLE[:len(SAMPLE) // 2])),
    "bad zlib data": (422, lambda: raw(png_with_header(28, 28, b"not zlib"))),
    "form without file": (400, lambda: {"files": {"picture": ("x.png", SAMPLE, "image/png")}}),
    "file field is text": (400, lambda: {"data": {"file": "text"}, "files": {"other": ("a.txt", b"a", "text/plain")}}),
    "empty file": (400, lambda: {"files": {"file": ("x.png", b"", "image/png")}}),
    "malformed form": (400, lambda: raw(b"--nope\r\n", "multipart/form-data; boundary=b")),
    "declared too big": (413, lambda: raw(b"x" * BIG)),
    "sent too big, chunked": (413, lambda: raw(chunked(b"x" * BIG))),
    "file too big in a form": (413, lambda: {"files": {"file": ("x.png", b"x" * BIG, "image/png")}}),
    "declared 400 M pixels": (413, lambda: raw(png_with_header(20_000, 20_000, zlib.compress(b"\0" * 64)))),
    "decompression bomb": (413, lambda: raw(real_bomb())),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors(client, case):
    status, make_request = ERROR_CASES[case]
    r = client.post("/api/predict", **make_request())
    assert r.status_code == status, (case, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    assert not INTERNALS.search(detail), detail


INTERNALS = re.compile(r"0x[0-9a-fA-F]{6,}|<[\w.]+ .*>|Traceback")  # heap addresses, object reprs


def test_hostile_bytes_never_500(client):
    """Seeded random corruptions of real images (PNG, JPEG, GIF): every answer is a 200 or a 4xx with detail."""
    rng = random.Random(5)
    grey = Image.open(SAMPLES / "8_mnist_test_0084.png")
    seeds = [SAMPLE, png_bytes(grey.convert("RGB"), "JPEG"), png_bytes(grey, "GIF"), png_bytes(grey, "TIFF")]
    statuses = set()
    for i in range(240):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            data[pos:pos + rng.randint(1, 4)] = rng.randbytes(rng.randint(0, 4))
        r = client.post("/api/predict", content=bytes(data), headers={"content-type": "image/png"})
        statuses.add(r.status_code)
        assert r.status_code == 200 or (400 <= r.status_code < 500 and r.json()["detail"]), (i, r.text)
        assert r.status_code == 200 or not INTERNALS.search(r.json()["detail"]), (i, r.text)
    assert 200 in statuses and len(statuses) > 1  # the corruptions really did hit both outcomes


# ---------------------------------------------------------------- concurrency: predictions run together
class GatedPredictor:
    """The real predictor, except that each prediction waits until ``parties`` of them are running at once."""

    def __init__(self, real: Predictor, parties: int):
        self.real, self.barrier = real, threading.Barrier(parties, timeout=30)

    def predict_image(self, *args, **kwargs):
        self.barrier.wait()  # BrokenBarrierError (→ 422) if the server ran predictions one at a time
        return self.real.predict_image(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_predictions_run_together_off_the_event_loop(predictor):
    gated = GatedPredictor(predictor, parties=3)
    with TestClient(create_app(predictor=gated, threads=3)) as c, ThreadPoolExecutor(3) as pool:
        first = [pool.submit(post_file, c, SAMPLE) for _ in range(2)]
        time.sleep(0.5)
        assert c.get("/api/health").status_code == 200  # the loop answers while two predictions wait
        assert not any(f.done() for f in first)
        last = post_file(c, SAMPLE)  # the third party: all three now run
        answers = [f.result(timeout=60) for f in first] + [last]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert all(r.json()["number"] == "7" for r in answers)


# ---------------------------------------------------------------- a real server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(run_dir: Path, log_path: Path, *extra: str, cores: set[int] | None = None):
    """``python -m mnist_cnn serve`` on a free loopback port, in a process group of its own as in a terminal;
    yields (base URL, process); stops it with Ctrl-C (SIGINT to the group). ``cores``: the only CPU cores the
    server may run on (as under taskset)."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "mnist_cnn", "serve", "--checkpoint", str(run_dir),
                             "--port", str(port), *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"server exited: {log_path.read_text()}"
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not up in 90 s: {log_path.read_text()}"
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole foreground process group
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_real_server_process(trained_run, predictor, tmp_path):
    log = tmp_path / "server.log"
    with running_server(trained_run, log, "--workers", "1") as (base, proc):  # this process serves
        page = httpx.get(base + "/")
        assert page.status_code == 200 and 'id="canvas"' in page.text
        for asset in ("/static/app.js", "/static/style.css"):
            assert httpx.get(base + asset).status_code == 200
        links = re.findall(r'(?:src|href)="([^"]*)"', page.text + httpx.get(base + "/static/app.js").text)
        assert links and not [u for u in links if u.startswith(("http", "//"))]  # no CDN: all assets are ours
        assert "/api/predict" in httpx.get(base + "/openapi.json").json()["paths"]
        with httpx.Client(base_url=base) as http:
            for path in SAMPLE_FILES[:3]:
                r = http.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/png")})
                assert r.status_code == 200 and r.json()["number"] == predictor.predict_file(path).number
            assert http.post("/api/predict", content=b"junk").status_code == 415
    assert proc.returncode == 0, log.read_text()  # Ctrl-C stops it cleanly
    assert "Traceback" not in log.read_text()


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_worker_processes_serve_and_stop_together(trained_run, predictor, tmp_path):
    """--workers 2: two processes, each with its own model, answer on one port; Ctrl-C stops them all."""
    log = tmp_path / "server.log"
    with running_server(trained_run, log, "--workers", "2") as (base, proc):
        workers = wait_for(lambda: len(w := worker_processes(proc.pid)) == 2 and w, 60, "two workers")
        with httpx.Client(base_url=base) as http:
            for path in SAMPLE_FILES:
                r = http.post("/api/predict", content=path.read_bytes(), headers={"content-type": "image/png"})
                assert r.status_code == 200 and r.json()["number"] == predictor.predict_file(path).number
    assert proc.returncode == 0, log.read_text()
    assert not [w for w in workers if alive(w)]  # no worker left behind
    assert "Traceback" not in log.read_text() and "2 worker processes" in log.read_text()


def worker_processes(pid: int) -> list[int]:
    """The server's worker processes: the children it forked, so with its own command line (not, say,
    multiprocessing's resource tracker)."""
    def cmdline(p: int) -> bytes:
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            return b""

    return [c for c in children(pid) if alive(c) and cmdline(c) == cmdline(pid)]


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return found


def test_a_dead_worker_is_replaced_and_workers_end_with_the_arbiter(trained_run, tmp_path):
    log = tmp_path / "server.log"
    with running_server(trained_run, log, "--workers", "2") as (base, proc):
        first = wait_for(lambda: len(w := worker_processes(proc.pid)) == 2 and w, 60, "two workers")
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: first[0] not in (w := worker_processes(proc.pid)) and len(w) == 2, 60, "a replacement")
        now = worker_processes(proc.pid)
        for _ in range(20):  # the workers answer
            assert httpx.get(base + "/api/health", timeout=10).status_code == 200
        os.kill(proc.pid, signal.SIGKILL)  # the arbiter dies without a word: its workers must not serve on
        proc.wait()
        # A worker polls for its parent each second, then shuts down: seconds, or longer on a busy machine
        wait_for(lambda: not [w for w in now if alive(w)], 60, f"orphaned workers still running: {now}")
    assert f"(pid:{first[0]}) was sent SIGKILL" in log.read_text()  # the arbiter saw it, and said so


@pytest.mark.parametrize("cores", [1, 2])
def test_workers_default_to_the_cores_the_server_may_use(trained_run, tmp_path, cores):
    """Without --workers: one server process per CPU core the server may run on (its affinity, as under taskset
    or a container's CPU limit), and the line it starts with says how many and why."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < cores:
        pytest.skip(f"{cores} cores needed, {len(allowed)} usable here")
    log = tmp_path / "server.log"
    with running_server(trained_run, log, cores=set(allowed[:cores])) as (base, proc):
        spawned = cores if cores > 1 else 0  # one core: no arbiter, the process itself serves
        wait_for(lambda: len(worker_processes(proc.pid)) == spawned, 60, f"{spawned} worker processes")
        assert httpx.get(base + "/api/health", timeout=10).status_code == 200
    started = [line for line in log.read_text().splitlines() if line.startswith("serving ")]
    assert len(started) == 1, log.read_text()
    assert f" with {cores} worker process{'es' if cores > 1 else ''} (the default: one per usable CPU core)" \
        in started[0], started[0]
    assert proc.returncode == 0, log.read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_clear_error(trained_run, tmp_path, workers):
    """Another server on the port, even one of our own with several workers: refused, in one line."""
    with running_server(trained_run, tmp_path / "first.log", "--workers", "2") as (base, _):
        port = base.rsplit(":", 1)[1]
        r = run_cli("serve", "--checkpoint", str(trained_run), "--port", port, "--workers", workers, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}"), r.stderr
    assert "Traceback" not in r.stderr


def test_serve_refuses_a_missing_checkpoint(tmp_path):
    r = run_cli("serve", "--checkpoint", str(tmp_path / "nothing"), "--port", str(free_port()), timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_serve_help_shows_the_defaults():
    r = run_cli("serve", "--help", timeout=60)
    assert r.returncode == 0 and "127.0.0.1" in r.stdout and "8000" in r.stdout
