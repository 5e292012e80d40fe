"""The processes of ``mnist-cnn serve --workers N``: a supervisor and N uvicorn workers on one port.

``supervise`` starts the workers (fresh interpreters), replaces any that dies and stops them all on Ctrl-C or
SIGTERM. Each worker (``run_worker``) builds its own app, and so loads its own model, with the factory it is
given (serve.py passes ``create_app``; this module does not import serve.py, which imports it) and listens on
its own SO_REUSEPORT socket (``listening_socket``); ``Rebalance`` keeps their keep-alive connections evenly
spread. The app itself, and single-process serving, are in serve.py.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from mnist_cnn import MnistCnnError

log = logging.getLogger("mnist_cnn.serve")


def listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    """A TCP socket bound to (host, port); ``shared``: SO_REUSEPORT, one of several processes' sockets on the
    port, among which the kernel spreads new connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MnistCnnError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


class Rebalance:
    """ASGI middleware of ``serve --workers N``: keeps keep-alive connections spread evenly over the workers.

    The kernel hands each new connection to one worker's SO_REUSEPORT socket by a hash, so 32 connections split
    20/12 about as often as 16/16, and the worker holding 20 answers each of them later: its requests queue
    behind one another while the other worker has time to spare. Each worker writes its count of open
    connections into ``counts`` (shared memory, one slot per worker); one holding more than its fair share,
    ceil(total / workers), answers a request with ``Connection: close``, at most one every ``SPACING_S``. The
    client reconnects, the kernel draws again, and within a few draws the split is even. Clients that open a
    connection per request (most browsers' pages, curl) are never closed early.
    """

    SPACING_S = 0.02  # time for the closed connection's replacement to be counted before the next close

    def __init__(self, app, counts, index: int):
        self.app, self.counts, self.index = app, counts, index
        self.connections: set | None = None  # uvicorn's set of open connections, given once its Server exists
        self.last_close = 0.0

    def overloaded(self) -> bool:
        """This worker holds more than its fair share of the open connections (and has not just closed one)."""
        if self.connections is None:
            return False
        mine = self.counts[self.index] = len(self.connections)
        fair = -(-sum(self.counts) // len(self.counts))
        now = time.monotonic()
        if mine <= fair or now - self.last_close < self.SPACING_S:
            return False
        self.last_close = now
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.overloaded():
            return await self.app(scope, receive, send)

        async def send_and_close(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_and_close)


ORPHAN_GRACE_S = 10.0  # seconds an orphaned worker gets to shut down gracefully before it exits at once


def run_worker(make_app, settings: dict, index: int, counts) -> None:
    """One process of ``serve --workers N``: its own app from ``make_app()`` (and so its own model), its own
    socket on the shared port (``settings``: host, port, log_level); ``counts``: the workers' open connections
    (shared memory, for Rebalance), this worker's at ``index``."""
    import signal
    import threading

    import uvicorn

    from mnist_cnn.http_limits import uvicorn_settings

    # Its own process group, so that a terminal's Ctrl-C reaches the supervisor only, which stops each worker
    # once. Not its own session (setsid): Linux's autogroup scheduler would then give every worker a group of
    # its own, which costs CPU per request and requests per second under load (bench/bench_serve.py shows it).
    os.setpgid(0, 0)
    parent = os.getppid()

    def orphaned() -> None:  # the supervisor was killed outright (SIGKILL): stop instead of serving on alone
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
        time.sleep(ORPHAN_GRACE_S)
        os._exit(1)  # still running: the graceful shutdown hangs, and an orphan must not serve on

    threading.Thread(target=orphaned, name="watch-supervisor", daemon=True).start()
    sock = listening_socket(settings["host"], settings["port"], shared=True)
    balancer = Rebalance(make_app(), counts, index)
    server = uvicorn.Server(uvicorn.Config(balancer, log_level=settings["log_level"], access_log=False,
                                           **uvicorn_settings()))
    balancer.connections = getattr(getattr(server, "server_state", None), "connections", None)
    server.run(sockets=[sock])


def supervise(make_app, settings: dict, workers: int) -> None:
    """Run ``workers`` processes until Ctrl-C or SIGTERM, replacing any that dies; each serves ``make_app()``
    (a picklable callable: the workers are fresh interpreters) as ``run_worker`` describes.

    Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new connections among them at
    random (uvicorn's own ``workers=N`` shares one socket, and whichever process wakes first accepts most of a
    burst of connections, whose requests then queue behind one another in that process), and
    Rebalance evens out the keep-alive connections that chance left uneven.
    """
    import multiprocessing
    import multiprocessing.connection
    import signal

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no state copied from this one
    counts = ctx.Array("i", workers, lock=False)  # each worker's open connections (see Rebalance)
    stopping = False

    def start(index: int) -> multiprocessing.Process:
        counts[index] = 0
        proc = ctx.Process(target=run_worker, args=(make_app, settings, index, counts), name="mnist-cnn-serve", daemon=False)
        proc.start()
        return proc

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # uvicorn's graceful shutdown

    procs = [start(i) for i in range(workers)]
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while any(p.is_alive() for p in procs):
        multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=1.0)
        for i, proc in enumerate(procs):
            if not stopping and not proc.is_alive():
                log.warning("worker %d exited with status %s: starting another", proc.pid, proc.exitcode)
                procs[i] = start(i)
    for proc in procs:
        proc.join()
