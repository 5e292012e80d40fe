"""The processes of ``mnist-cnn serve --workers N``: gunicorn's arbiter and N uvicorn workers on one port.

gunicorn's arbiter (``supervise``) forks the workers, which share its listening socket, replaces any that dies
at once, and stops them all on Ctrl-C or SIGTERM. Each worker (``Worker``: uvicorn's gunicorn worker with the
HTTP limits of http_limits.py) builds its own app, and so loads its own model, with the factory it is given
(serve.py passes ``create_app``), and stops when the arbiter is killed outright. The app itself, and
single-process serving, are in serve.py. gunicorn rather than a supervisor of our own: bench/bench_serve_libs.py
measured the two (bench/RESULTS.md, "Library or own code").
"""

from __future__ import annotations

import os
import signal
import threading
import time

from mnist_cnn.http_limits import uvicorn_settings

ORPHAN_GRACE_S = 10.0  # seconds an orphaned worker gets to shut down gracefully before it exits at once

try:
    from gunicorn.app.base import BaseApplication
    from uvicorn_worker import UvicornWorker
except ImportError:  # not on Windows (gunicorn is POSIX only): serve runs one process there
    BaseApplication = UvicornWorker = None


def available() -> bool:
    """Whether this platform can run several server processes (gunicorn and its uvicorn worker installed)."""
    return BaseApplication is not None


if available():

    class Worker(UvicornWorker):
        """uvicorn's gunicorn worker with the project's HTTP limits; it stops when its arbiter is gone."""

        CONFIG_KWARGS = {"loop": "auto", "http": "auto", **uvicorn_settings()}

        def init_process(self) -> None:
            threading.Thread(target=self._watch_arbiter, name="watch-arbiter", daemon=True).start()
            super().init_process()

        def init_signals(self) -> None:
            # uvicorn handles SIGINT and SIGTERM while it serves, then raises the signal again as it exits, for
            # the default action: that would end each worker "killed by SIGINT", which the arbiter reports as a
            # warning on every Ctrl-C. Ignored outside uvicorn's handlers, a worker that stopped exits cleanly.
            super().init_signals()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

        async def _serve(self) -> None:
            # uvicorn closes the listening sockets it is given when it stops: given gunicorn's wrappers, whose
            # own close then fails on the closed descriptor, every worker would log an error at each stop
            self.sockets = [getattr(s, "sock", s) for s in self.sockets]
            await super()._serve()

        def _watch_arbiter(self) -> None:
            """The arbiter was killed outright (SIGKILL) when this process's parent changes: stop instead of
            serving on alone, gracefully if that takes under ORPHAN_GRACE_S."""
            while os.getppid() == self.ppid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
            time.sleep(ORPHAN_GRACE_S)
            os._exit(1)

    class Arbiter(BaseApplication):
        """gunicorn run from code: ``options`` are gunicorn settings; each worker serves ``make_app()``."""

        def __init__(self, make_app, options: dict):
            self.make_app, self.options = make_app, options
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25 would open one in ~/.gunicorn
                self.cfg.set("control_socket_disable", True)

        def load(self):
            return self.make_app()


def supervise(make_app, settings: dict, workers: int) -> None:
    """Run ``workers`` processes until Ctrl-C or SIGTERM, replacing any that dies; each serves ``make_app()``
    (called in the worker, after the fork) on ``settings``' host and port at ``settings``' log level."""
    host = f"[{settings['host']}]" if ":" in settings["host"] else settings["host"]
    Arbiter(make_app, {"bind": f"{host}:{settings['port']}", "workers": workers, "worker_class": Worker,
                       "loglevel": settings["log_level"], "graceful_timeout": int(ORPHAN_GRACE_S),
                       "proc_name": "mnist-cnn-serve"}).run()
