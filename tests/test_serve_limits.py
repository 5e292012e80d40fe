"""The server's connection limits against a real uvicorn server on loopback (in a thread of this process, so
that the deadlines can be shortened): oversized heads, slowloris, stalled and aborted uploads."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
import uvicorn

from conftest import SAMPLES
from mnist_cnn import http_limits, serve
from mnist_cnn.predict import Predictor
from mnist_cnn.serve import create_app

SAMPLE = (SAMPLES / "7_mnist_test_0017.png").read_bytes()


@pytest.fixture(scope="module")
def server(trained_run):
    """(host, port) of a uvicorn server with the same settings as ``mnist-cnn serve``; head deadline 1 s."""
    patch = pytest.MonkeyPatch()
    patch.setattr(http_limits, "HEAD_TIMEOUT_S", 1.0)
    patch.setattr(serve, "BODY_IDLE_S", 1.0)
    app = create_app(predictor=Predictor.from_checkpoint(trained_run), threads=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info",
                                        **http_limits.uvicorn_settings()))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(30)
    patch.undo()


def connect(server) -> socket.socket:
    sock = socket.create_connection(server, timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def health_ok(server) -> bool:
    with connect(server) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_all(s).startswith(b"HTTP/1.1 200")


def test_an_oversized_head_gets_431_and_the_server_carries_on(server):
    with connect(server) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (http_limits.MAX_HEAD_BYTES + 1))
        try:
            s.sendall(b"a" * 1_000_000)  # the rest of a 1 MB header, if the server still reads it
        except OSError:
            pass  # closed while sending: refused already
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 431 ")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in head and json.loads(body)["detail"]  # as every error of the API
    assert health_ok(server)


def test_a_head_just_under_the_limit_is_served(server):
    pad = b"a" * (http_limits.MAX_HEAD_BYTES - 200)
    with connect(server) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: " + pad + b"\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200")


def test_slowloris_connections_are_closed(server):
    """Headers trickled a line at a time never complete: each connection is closed at the head deadline."""
    socks = [connect(server) for _ in range(20)]
    for s in socks:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.2)
    closed, deadline = set(), time.time() + 30
    while len(closed) < len(socks) and time.time() < deadline:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                s.sendall(b"X-More: 1\r\n")
                if s.recv(1024) == b"":
                    closed.add(i)
            except socket.timeout:
                pass
            except OSError:  # reset: closed too
                closed.add(i)
    for s in socks:
        s.close()
    assert len(closed) == len(socks)
    assert health_ok(server)


def test_a_stalled_upload_gets_408(server):
    with connect(server) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(SAMPLE) + SAMPLE[:100])
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"upload too slow" in answer


def test_a_408_closes_a_kept_alive_connection(server):
    """RFC 9110: a 408 closes the connection. Kept alive, the server would wait for the rest of the declared body
    and take the client's next request on that connection for part of it: that request would get no answer."""
    with connect(server) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(SAMPLE) + SAMPLE[:100])
        head = read_all(s).split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 408 ") and b"connection: close" in head.split(b"\r\n"), head


def test_an_aborted_upload_logs_one_line_not_a_traceback(server, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(5):
        with connect(server) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 100000\r\n\r\n" + SAMPLE[:200])
            time.sleep(0.1)
    time.sleep(0.5)
    assert health_ok(server)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert caplog.text.count("went away during its upload") == 5
