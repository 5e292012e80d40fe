"""The server side of bench_serve_libs.py: the project's app with the libraries' alternatives around it.

- ``app()``: ``create_app`` as ``serve --workers N`` builds it in each worker (``BENCH_CHECKPOINT``,
  ``BENCH_ENGINE``, ``BENCH_THREADS`` from the environment), for uvicorn's and gunicorn's own workers.
- ``upload_app()``: the same app plus ``POST /api/predict-uploadfile``, the /api/predict route with the body
  read by FastAPI's ``UploadFile`` instead of serve.read_upload; everything after the read is the same code.

``python bench/serve_libs_app.py upload|app PORT WORKERS``: that app under uvicorn.run (its own
multi-process mode when WORKERS > 1), with the settings ``serve`` uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from fastapi import HTTPException, Request, UploadFile
from fastapi.responses import Response

from mnist_cnn.http_limits import uvicorn_settings
from mnist_cnn.serve import MAX_UPLOAD_BYTES, create_app, predict_bytes


def app():
    threads = int(os.environ.get("BENCH_THREADS") or 0) or None
    return create_app(os.environ["BENCH_CHECKPOINT"], engine=os.environ.get("BENCH_ENGINE", "auto"), threads=threads)


def upload_app():
    application = app()

    @application.post("/api/predict-uploadfile")
    async def predict_uploadfile(request: Request, file: UploadFile) -> Response:
        t0 = time.perf_counter()
        # FastAPI has parsed the whole form by now, the file spooled (to disk past 1 MB): its size is known
        if file.size is not None and file.size > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"file over the limit of {MAX_UPLOAD_BYTES:,} bytes")
        data = await file.read()
        if not data:
            raise HTTPException(400, "the uploaded file is empty")
        out = await asyncio.get_running_loop().run_in_executor(request.app.state.pool, predict_bytes,
                                                               request.app.state.predictor, data,
                                                               file.filename or "upload")
        out["timing_ms"]["total"] = round((time.perf_counter() - t0) * 1e3, 3)
        return Response(json.dumps(out, separators=(",", ":")), media_type="application/json")

    return application


if __name__ == "__main__":
    import uvicorn

    kind, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    uvicorn.run(f"serve_libs_app:{kind}_app" if kind == "upload" else "serve_libs_app:app", factory=True,
                host="127.0.0.1", port=port, workers=workers, log_level="warning", access_log=False,
                **uvicorn_settings())
