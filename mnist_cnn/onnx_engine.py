"""Predictions on ONNX Runtime, without importing torch: ``OnnxEngine("runs/mnist/model.onnx").logits(x)``.

    PYTHONPATH=. python -c "from mnist_cnn.onnx_engine import onnx_for; print(onnx_for('runs/mnist'))"

``import torch`` alone takes 1.7 s here; onnxruntime + numpy take 0.2 s. So the predictor asks ``onnx_for``
whether a run holds a ``model.onnx`` in step with the checkpoint it would otherwise load (same SHA-256 as the
file it was exported from, recorded in the ONNX metadata by export.py) and then runs it here.

Throughput: one session with a single intra-op thread, called from several Python threads on slices of the
batch (ONNX Runtime releases the GIL). On this small network that beats ONNX Runtime's own intra-op threads,
which synchronise after every layer (bench/bench_infer.py compares both).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np

from mnist_cnn import MnistCnnError

ONNX_NAME = "model.onnx"
INPUT, OUTPUT = "images", "logits"
META_PREFIX = "mnist_cnn."
_CP = re.compile(r"^cp-(\d{7,})\.pt$")


# ---------------------------------------------------------------- where model.onnx lives
def run_folder(checkpoint: Path) -> Path:
    """The run folder of a checkpoint file: ``run/checkpoints/best.pt`` → ``run``; else its folder."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def default_onnx_path(checkpoint: Path) -> Path:
    """Where ``export`` writes and ``predict`` looks: ``model.onnx`` in the checkpoint's run folder."""
    return run_folder(checkpoint) / ONNX_NAME


def checkpoint_in(folder: Path) -> Path | None:
    """The file ``checkpoint.find_checkpoint`` would load from a folder (best.pt, last.pt, newest cp-*.pt).

    Reimplemented here by name only, because checkpoint.py imports torch.
    """
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    numbered = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CP.match(p.name)))
    return numbered[-1][1] if numbered else None


def in_step(onnx_path: Path, checkpoint: Path) -> bool:
    """True when ``onnx_path`` was exported from exactly these checkpoint bytes."""
    from mnist_cnn.data import sha256

    try:
        recorded = read_metadata(onnx_path).get("checkpoint_sha256")
    except MnistCnnError:
        return False
    return recorded == sha256(checkpoint)


def onnx_for(where: str | Path) -> Path | None:
    """The ``model.onnx`` to use for ``where`` (run folder, checkpoints folder, .pt or .onnx file), or None.

    None means "use PyTorch": no model.onnx, or one exported from other checkpoint bytes than those
    ``where`` resolves to (a warning says so). A folder that holds a model.onnx and no checkpoint at all (a
    deployment of the ONNX file alone) uses it: there is nothing for it to be out of step with.
    """
    where = Path(where)
    if where.suffix == ".onnx":
        if not where.is_file():
            raise MnistCnnError(f"{where}: file not found")
        return where
    if where.is_file():
        checkpoint, onnx_path = where, default_onnx_path(where)
    elif where.is_dir():
        folder = where / "checkpoints" if (where / "checkpoints").is_dir() else where
        run = folder.parent if folder.name == "checkpoints" else folder
        checkpoint, onnx_path = checkpoint_in(folder), run / ONNX_NAME
    else:
        return None
    if not onnx_path.is_file():
        return None
    if checkpoint is None or in_step(onnx_path, checkpoint):
        return onnx_path
    print(f"warning: {onnx_path} is out of step with {checkpoint} (exported from other weights, or unreadable);"
          f" predicting with PyTorch."
          f" Refresh it with: mnist-cnn export --checkpoint {checkpoint}", file=sys.stderr)
    return None


# ---------------------------------------------------------------- sessions
def new_session(model: str | Path | bytes):
    """An ONNX Runtime CPU session with one intra-op thread and every graph optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's warnings are about its own internals
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise MnistCnnError(f"cannot load ONNX model {model if not isinstance(model, bytes) else ''}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None


@functools.lru_cache(maxsize=4)
def _cached_session(path: str, _mtime_ns: int, _size: int):
    return new_session(path)


def session_for(path: str | Path):
    """A session for ``path``, shared while the file is unchanged: checking metadata and predicting load once."""
    try:
        st = os.stat(path)
    except OSError:
        raise MnistCnnError(f"{path}: file not found") from None
    return _cached_session(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def read_metadata(path: str | Path) -> dict:
    """The provenance export.py wrote (model_name, step, best_acc, temperature, checkpoint_sha256, …)."""
    props = session_for(path).get_modelmeta().custom_metadata_map
    return {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------- the engine
class OnnxEngine:
    """Logits from a model.onnx; the same interface as predict.TorchEngine (name, meta, logits)."""

    name = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, chunk: int = 32):
        """threads: Python threads that run slices of a large batch at once (default: the usable cores);
        chunk: images per slice, the unit of work one thread takes (16-256 measure alike here)."""
        self.path = Path(path)
        self.session = session_for(self.path)
        self.threads = max(1, threads or usable_cores())
        self.chunk = max(1, chunk)
        self._pool = None  # a ThreadPoolExecutor, made on the first batch larger than a chunk
        self._pool_lock = threading.Lock()
        self.metadata = read_metadata(self.path)
        md = self.metadata
        self.meta = {"model_name": md.get("model_name", "unknown"), "step": int(md.get("step", 0)),
                     "best_acc": float(md.get("best_acc", 0.0)), "temperature": float(md.get("temperature", 1.0)),
                     "reject_energy": float(md["reject_energy"]) if md.get("reject_energy") else None}

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: x})[0]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N,28,28) float32 in [0,1], ink bright → (N,10) float32 logits."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise MnistCnnError(f"expected images of shape (N,28,28), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, 10), np.float32)
        if self.threads == 1 or len(x) <= self.chunk:
            return self._run(x)
        with self._pool_lock:  # the server may call from several threads at once
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor  # not imported on the one-image path

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx")
        parts = [x[i:i + self.chunk] for i in range(0, len(x), self.chunk)]
        return np.concatenate(list(self._pool.map(self._run, parts)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
