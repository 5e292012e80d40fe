"""HTTP API and drawing page: ``mnist-cnn serve [--checkpoint runs/mnist] [--host 127.0.0.1] [--port 8000]``.

Then open http://127.0.0.1:8000/ and draw a digit, or ask the API:
``curl -F file=@samples/7_mnist_test_0017.png http://127.0.0.1:8000/api/predict`` (or send the image as the raw
body: ``curl --data-binary @digit.png -H 'Content-Type: image/png' …``). The OpenAPI page is at /docs (Swagger
UI, served by the app itself like every other asset: it works offline).

``create_app`` is the app factory; its lifespan loads one Predictor (the CLI's) unless one is passed in. The
CPU work of a prediction runs in worker threads, never on the event loop, so concurrent requests are served
together: a ThreadPoolExecutor of about one thread per core (more threads only fight over the GIL), through
``loop.run_in_executor``, which costs less server CPU per request than anyio's ``to_thread`` (both measured
with bench/bench_serve.py). For more than one core's worth of Python, ``serve`` runs several processes, by
default one per usable core (``--workers``, workers.py).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import multiprocessing
import socket
import struct
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from mnist_cnn import CorruptImage, MnistCnnError, NotAnImage, TooLarge, __version__
from mnist_cnn import workers as processes
from mnist_cnn.engine import usable_cores
from mnist_cnn.http_limits import MAX_HEAD_BYTES, uvicorn_settings
from mnist_cnn.memory import return_big_buffers
from mnist_cnn.preprocess import MAX_PIXELS

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # an image over 10 MB is refused with 413 (documented in the API page)
FORM_OVERHEAD = 64 * 1024  # room for the multipart envelope around a file of MAX_UPLOAD_BYTES
BODY_IDLE_S, BODY_TIMEOUT_S = 15.0, 120.0  # a stalled or endless upload is answered 408 and dropped
STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("mnist_cnn.serve")


# ---------------------------------------------------------------- typed responses (the OpenAPI schema)
class Timing(BaseModel):
    predict: float = Field(description="preprocessing + model, in the worker thread (ms)")
    total: float = Field(description="from the request's arrival in the handler to the answer (ms)")


class PredictResponse(BaseModel):
    """``Prediction.to_dict()`` plus the model's 28×28 inputs and timing; new Prediction fields pass through."""

    model_config = ConfigDict(extra="allow")
    source: str
    number: str = Field(description="the digits read, left to right; empty when no ink was found")
    digits: list[int]
    confidence: list[float] = Field(description="per digit: the probability of the digit read")
    probabilities: list[list[float]] = Field(description="per digit: the 10 probabilities of 0…9")
    verdict: Literal["ok", "unsure", "no digit found"] = Field(description="unsure: a digit is unsure")
    status: list[Literal["ok", "unsure"]] = Field(description="per digit")
    reasons: list[str] = Field(description="per digit: why it is unsure; empty when sure")
    energy: list[float] = Field(description="per digit: -logsumexp(logits); high means unlike any digit")
    inputs_png: list[str] = Field(description="per digit: the 28×28 image the model saw, a PNG data URL")
    timing_ms: Timing


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model_name: str | None = None
    parameters: int | None = Field(None, description="trainable parameters (None when the engine cannot tell)")
    test_accuracy: float | None = Field(None, description="the test accuracy of the checkpoint (chosen on held-out images)")
    step: int | None = Field(None, description="optimizer steps the checkpoint was trained for")
    engine: str
    checkpoint: str


class Health(BaseModel):
    status: str
    version: str
    engine: str
    uptime_s: float


class ErrorDetail(BaseModel):
    detail: str


STATUS_OF = ((TooLarge, 413), (NotAnImage, 415), (CorruptImage, 422), (MnistCnnError, 422))  # first match wins
ERRORS = {code: {"model": ErrorDetail, "description": text} for code, text in {
    400: "empty body or file, malformed multipart form, no `file` field, or over 8 other fields",
    413: f"body over {MAX_UPLOAD_BYTES // 2**20} MB, or an image over {MAX_PIXELS:,} pixels (decompression bomb)",
    408: f"the upload stalled (no data for {BODY_IDLE_S:.0f} s) or took over {BODY_TIMEOUT_S:.0f} s; the connection "
         f"is closed",
    415: "not an image format Pillow can read",
    422: "a corrupt or truncated image",
}.items()}
# Every operation: a request head over the limit is refused before routing (http_limits.py)
HEAD_ERROR = {431: {"model": ErrorDetail, "description": f"request line and headers over "
                                                          f"{MAX_HEAD_BYTES // 1024} KiB; the connection is closed"}}


# ---------------------------------------------------------------- the work done in a thread
def png_data_url(a: np.ndarray) -> str:
    """(28,28) floats in [0,1] → a grey PNG as a data URL (ink bright, as the model saw it). Written directly
    (signature, IHDR, one zlib IDAT, IEND): this runs for every digit of every request, and Pillow's encoder
    takes about four times as long for an image this small (tests/test_serve.py decodes it with Pillow)."""
    h, w = a.shape
    rows = np.zeros((h, w + 1), np.uint8)  # each row starts with its filter type: 0, none
    rows[:, 1:] = (np.clip(a, 0, 1) * 255).round()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def predict_bytes(predictor, data: bytes, source: str) -> dict:
    """Runs in a worker thread: the whole CPU part of one request. Preprocessing reads the header first and
    refuses what is not an image or too large before decoding (typed errors, see ``STATUS_OF``)."""
    t0 = time.perf_counter()
    try:
        pred = predictor.predict_image(data, source=source)
    except MnistCnnError:
        raise
    except Exception:  # a failure preprocessing does not name: still the client's image, not a server error
        log.warning("image from %s could not be processed", source, exc_info=True)
        raise CorruptImage("could not process the image") from None
    out = pred.to_dict()
    inputs = pred.inputs if pred.inputs is not None else np.zeros((0, 28, 28), np.float32)
    out["inputs_png"] = [png_data_url(a) for a in inputs]
    out["timing_ms"] = {"predict": round((time.perf_counter() - t0) * 1e3, 3)}
    return out


# ---------------------------------------------------------------- reading the upload
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes, and with 408 when the
    client stops sending (``BODY_IDLE_S`` without data, or ``BODY_TIMEOUT_S`` in all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {int(declared):,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BODY_TIMEOUT_S
    stream = request.stream().__aiter__()
    while True:
        try:
            wait = min(BODY_IDLE_S, deadline - loop.time())
            chunk = await asyncio.wait_for(stream.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            # Closed after the answer (RFC 9110: a 408 closes): kept alive, the rest of the unfinished body
            # would be waited for, and a client's next request on the connection swallowed as part of it.
            raise HTTPException(408, f"upload too slow: the body must arrive within {BODY_TIMEOUT_S:.0f} s, with "
                                     f"no pause over {BODY_IDLE_S:.0f} s", headers={"Connection": "close"}) from None
        except ClientDisconnect:  # the client gave up: one line in the log, not a traceback
            log.info("%s went away during its upload", _peer(request))
            raise HTTPException(400, "upload aborted by the client") from None
        size += len(chunk)  # the bytes actually received count, whatever the header said
        if size > limit:
            raise HTTPException(413, f"body over the limit of {MAX_UPLOAD_BYTES:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"


async def read_upload(request: Request) -> tuple[bytes, str]:
    """(image bytes, a name for it) from a multipart ``file`` field or from the raw body."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        data = await read_body(request, MAX_UPLOAD_BYTES)
        if not data:
            raise HTTPException(400, "empty body: send an image file (multipart field 'file') or raw image bytes")
        return data, "upload"
    body = await read_body(request, MAX_UPLOAD_BYTES + FORM_OVERHEAD)

    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=8).parse()
    except MultiPartException as e:
        raise HTTPException(400, f"malformed multipart form: {e.message}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "multipart form without a 'file' field holding the image")
    data = await upload.read()
    await form.close()
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"file over the limit of {MAX_UPLOAD_BYTES:,} bytes")
    if not data:
        raise HTTPException(400, "the uploaded file is empty")
    return data, upload.filename or "upload"


IMAGE_BYTES = {"type": "string", "format": "binary", "minLength": 1}  # empty: 400
UPLOAD_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {  # other (text) fields are ignored, up to 8 of them; more are refused (400)
        "schema": {"type": "object", "required": ["file"], "properties": {"file": IMAGE_BYTES},
                   "additionalProperties": {"type": "string"}, "maxProperties": 9},
        "encoding": {"file": {"contentType": "image/*, application/octet-stream"}}},
    "image/*": {"schema": IMAGE_BYTES},
    "application/octet-stream": {"schema": IMAGE_BYTES},  # any other type is read as raw image bytes too
}}}


# ---------------------------------------------------------------- the app
def count_parameters(engine) -> int | None:
    """The model's parameters: the torch module's, or the float initializers (the weights) of the ONNX graph."""
    model = getattr(engine, "model", None)
    if model is not None and hasattr(model, "parameters"):
        return sum(p.numel() for p in model.parameters())
    path = getattr(engine, "path", None)
    if path is None or not str(path).endswith(".onnx"):
        return None
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # a description is not worth failing the server for
        log.warning("cannot count the parameters of %s", path, exc_info=True)
        return None
    return sum(int(np.prod(t.dims)) for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def model_info(predictor) -> dict:
    info = dict(predictor.describe())
    info.setdefault("test_accuracy", info.get("best_acc"))
    if info.get("parameters") is None:
        info["parameters"] = count_parameters(predictor.engine)
    return info


def quiet_client_noise() -> None:
    """Keeps what libraries say about a client's bad input out of the server's log: that input is answered with
    a 4xx and its reason, and a log that any client can write lines to at will hides the lines that matter.
    python-multipart logs each malformed form as a warning (the 400's detail, word for word); Pillow warns
    about the damaged metadata of images it still reads."""
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def create_app(checkpoint: str | Path | None = None, predictor=None, threads: int | None = None,
               engine: str = "auto") -> FastAPI:
    """The FastAPI app. ``predictor``: use this one; else the lifespan loads ``checkpoint`` on ``engine``
    (None: the default model, see resolve.py).

    ``threads``: predictions run at once (default: the number of CPU cores).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from mnist_cnn.predict import Predictor

        app.state.predictor = predictor or Predictor.from_checkpoint(checkpoint, engine=engine)
        if app.state.predictor.engine.name == "torch":
            import torch

            torch.set_num_threads(1)  # parallelism comes from concurrent requests; intra-op threads only contend
        return_big_buffers()  # a decompression bomb's buffers go back to the OS after its request (memory.py)
        quiet_client_noise()
        app.state.pool = ThreadPoolExecutor(threads or usable_cores(), thread_name_prefix="predict")
        app.state.started = time.monotonic()
        app.state.info = model_info(app.state.predictor)
        app.state.predictor.predict_arrays(np.zeros((1, 28, 28), np.float32))  # warm up: the first user waits less
        yield
        app.state.pool.shutdown(cancel_futures=True)

    # FastAPIOffline: FastAPI whose /docs (Swagger UI) and /redoc pages load their scripts from the app, not a CDN
    app = FastAPIOffline(title="mnist-cnn", version=__version__, lifespan=lifespan, responses=HEAD_ERROR,
                         description="Read handwritten digits. POST an image to /api/predict; draw at /.")
    add_routes(app)

    @app.exception_handler(MnistCnnError)
    async def user_error(request: Request, exc: MnistCnnError) -> JSONResponse:
        """Every error preprocessing names, as its HTTP status with the one-line message as ``detail``."""
        return JSONResponse({"detail": str(exc)}, status_code=next(c for t, c in STATUS_OF if isinstance(exc, t)))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def add_routes(app: FastAPI) -> None:
    @app.post("/api/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=UPLOAD_DOC,
              summary=f"read the digits in an image (multipart field 'file' or raw body; up to "
                      f"{MAX_UPLOAD_BYTES // 2**20} MB)")
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        data, source = await read_upload(request)
        out = await asyncio.get_running_loop().run_in_executor(request.app.state.pool, predict_bytes,
                                                               request.app.state.predictor, data, source)
        out["timing_ms"]["total"] = round((time.perf_counter() - t0) * 1e3, 3)
        # Already the documented shape: sent as it is, not validated again against PredictResponse (that
        # round trip through pydantic and jsonable_encoder cost more CPU than the prediction's model call).
        return Response(json.dumps(out, separators=(",", ":")), media_type="application/json")

    @app.get("/api/health", response_model=Health)
    async def health(request: Request) -> dict:
        state = request.app.state
        return {"status": "ok", "version": __version__, "engine": state.info.get("engine", "?"),
                "uptime_s": round(time.monotonic() - state.started, 3)}

    @app.get("/api/model", response_model=ModelInfo)
    async def model(request: Request) -> dict:
        return request.app.state.info

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")


def default_workers() -> tuple[int, str]:
    """(server processes, why that many) when ``--workers`` is not given: one per CPU core this process may
    use, since Python's work (HTTP, preprocessing) holds the GIL and so keeps one core busy per process; one
    where gunicorn does not run (Windows)."""
    if not processes.available():
        return 1, "the default without gunicorn"
    return usable_cores(), "the default: one per usable CPU core"


def check_port_free(host: str, port: int) -> None:
    """One clear error when another server (of ours or not) holds the port, before any process starts."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise MnistCnnError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def describe_model(checkpoint: str | Path | None, engine: str) -> tuple[str, str]:
    """(model file, engine name) that ``serve`` loads for ``checkpoint``; its errors are the user's one line."""
    from mnist_cnn.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, engine=engine)
    return str(predictor.checkpoint), predictor.engine.name


def serve(checkpoint: str | Path | None, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None,
          engine: str = "auto", log_level: str = "info", workers: int | None = None) -> None:
    """Load the model (errors surface here, before the server starts), then run uvicorn until Ctrl-C.

    ``workers``: server processes on the port, each with its own model, so that Python's work runs on several
    cores at once instead of taking turns under one GIL (None: ``default_workers``). With 1, this process
    serves; with more, gunicorn's arbiter runs them (workers.py).
    """
    import uvicorn

    from mnist_cnn.predict import Predictor

    workers, why = (workers, "") if workers is not None else default_workers()
    if workers > 1 and not processes.available():
        raise MnistCnnError("--workers above 1 needs gunicorn, which runs on Linux and macOS: use --workers 1")
    if workers > 1:  # checked in a fresh process: the workers are forked from this one, which must hold no
        # ONNX Runtime or torch state (a forked copy of their threads aborts the worker when it exits)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            model_file, engine_name = pool.submit(describe_model, checkpoint, engine).result()
    else:
        predictor = Predictor.from_checkpoint(checkpoint, engine=engine)
        model_file, engine_name = str(predictor.checkpoint), predictor.engine.name
    started = (f"serving {model_file} ({engine_name}) on http://{host}:{port}/ with {workers} "
               f"worker process{'es' if workers > 1 else ''}{f' ({why})' if why else ''}  (Ctrl-C stops)")
    check_port_free(host, port)
    print(started, flush=True)
    if workers > 1:
        make_app = functools.partial(create_app, model_file, engine=engine_name,
                                     threads=threads or max(1, usable_cores() // workers))
        processes.supervise(make_app, {"host": host, "port": port, "log_level": log_level}, workers)
        return
    uvicorn.run(create_app(predictor=predictor, threads=threads), host=host, port=port, log_level=log_level,
                access_log=False, **uvicorn_settings())
