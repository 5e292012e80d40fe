"""Engines: logits from a model file, on ONNX Runtime or PyTorch, behind one ``Engine`` protocol.

    PYTHONPATH=. python -c "from mnist_cnn.engine import read_onnx; print(read_onnx('mnist_cnn/models/tutorial.onnx')[0])"

``ModelMeta`` is what a model file says about itself (network, step, accuracy, calibration), read alike from
a checkpoint (``ModelMeta.from_checkpoint``) or from an ONNX file's ``metadata_props`` (``read_onnx``), which
export.py writes. The ONNX side never imports torch (``import torch`` alone takes seconds; onnxruntime and
numpy a fraction of one), nor the ``onnx`` package: an ONNX file is a protobuf ``ModelProto``, and protobuf
keeps the fields it has no schema for, so the graph and the metadata are read with protobuf's own parser.

Integrity: export records the SHA-256 of the serialized graph (every node and weight) as ``payload_sha256``;
``read_onnx`` recomputes it, and ``OnnxEngine`` refuses a file whose graph no longer matches.

Throughput: one ONNX Runtime session with a single intra-op thread, called from several Python threads on
slices of a batch (ONNX Runtime releases the GIL). On this small network that beats ONNX Runtime's own
intra-op threads, which synchronise after every layer (bench/bench_infer.py compares both).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mnist_cnn import MnistCnnError

ONNX_NAME = "model.onnx"
INPUT, OUTPUT = "images", "logits"
META_PREFIX = "mnist_cnn."
PAYLOAD_KEY = "payload_sha256"
GRAPH_FIELD, METADATA_FIELD = 7, 14  # ModelProto.graph and ModelProto.metadata_props in onnx.proto


@dataclass(frozen=True)
class ModelMeta:
    """What a model file records about itself; the same fields from a checkpoint and from an ONNX file."""

    model_name: str = "unknown"
    step: int = 0
    best_acc: float = 0.0  # accuracy on the test set when the checkpoint was saved
    temperature: float = 1.0  # logits are divided by it before softmax (calibrate.py)
    reject_energy: float | None = None  # "not a digit" above this energy; None: confidence only
    parameters: int | None = None

    @classmethod
    def from_checkpoint(cls, ckpt: dict, parameters: int | None = None) -> "ModelMeta":
        line = ckpt.get("reject_energy")
        return cls(str(ckpt.get("model_name", "tutorial")), int(ckpt.get("step", 0)),
                   float(ckpt.get("best_acc", 0.0)), float(ckpt.get("temperature") or 1.0),
                   None if line is None else float(line), parameters)

    @classmethod
    def from_strings(cls, props: dict[str, str]) -> "ModelMeta":
        """From ONNX metadata (every value a string; absent or empty ones keep their defaults)."""
        kinds = {f.name: f.default for f in dataclasses.fields(cls)}
        kinds.update(step=0, parameters=0, reject_energy=0.0)  # the type to parse each into
        return cls(**{k: type(kinds[k])(props[k]) for k in kinds if props.get(k) not in (None, "", "None")})

    def to_strings(self) -> dict[str, str]:
        return {k: str(v) for k, v in dataclasses.asdict(self).items() if v is not None}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Engine(Protocol):
    """What the Predictor needs from an engine."""

    name: str
    meta: ModelMeta

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N,28,28) float32 in [0,1], ink bright → (N,10) logits."""


# ---------------------------------------------------------------- ONNX files, without the onnx package
def _fields(message: bytes) -> dict[int, list[bytes]]:
    """The length-delimited fields of a protobuf message, by field number (no schema needed)."""
    from google.protobuf import empty_pb2
    from google.protobuf.unknown_fields import UnknownFieldSet

    parsed = empty_pb2.Empty()
    try:
        parsed.ParseFromString(message)
    except Exception as e:  # google.protobuf.message.DecodeError: not a protobuf message
        raise MnistCnnError(f"not an ONNX file ({type(e).__name__})") from None
    found: dict[int, list[bytes]] = {}
    for f in UnknownFieldSet(parsed):
        if f.wire_type == 2:
            found.setdefault(f.field_number, []).append(f.data)
    return found


def payload_sha256(model: bytes) -> str:
    """The SHA-256 of a serialized ModelProto's graph: its nodes and weights, not its metadata."""
    graphs = _fields(model).get(GRAPH_FIELD)
    if not graphs:
        raise MnistCnnError("not an ONNX model (no graph)")
    return hashlib.sha256(graphs[0]).hexdigest()


def read_onnx(source: str | Path | bytes) -> tuple[dict[str, str], bytes]:
    """(the mnist-cnn metadata export.py wrote, the file's bytes) of an ONNX file whose graph is intact.

    Raises MnistCnnError when the file is missing, not ONNX, or its graph does not match the recorded
    ``payload_sha256`` (a file exported before the hash existed has none and is taken as it is). A file is
    read and checked once while it is unchanged (resolve.py checks it, then the engine runs the same bytes).
    """
    if isinstance(source, bytes):
        return _checked(source, "")
    try:
        st = os.stat(source)
    except OSError as e:
        raise MnistCnnError(f"cannot load ONNX model {source}: {e.strerror or e}") from None
    return _read_file(str(Path(source).resolve()), st.st_mtime_ns, st.st_size, str(source))


@functools.lru_cache(maxsize=4)
def _read_file(path: str, _mtime_ns: int, _size: int, shown: str) -> tuple[dict[str, str], bytes]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise MnistCnnError(f"cannot load ONNX model {shown}: {e.strerror or e}") from None
    return _checked(data, f" {shown}")


def _checked(data: bytes, where: str) -> tuple[dict[str, str], bytes]:
    try:
        fields = _fields(data)
        entries = [_fields(e) for e in fields.get(METADATA_FIELD, [])]
        props = {e[1][0].decode(): e.get(2, [b""])[0].decode() for e in entries if 1 in e}
    except (ValueError, MnistCnnError) as e:  # ValueError: metadata that is not UTF-8
        raise MnistCnnError(f"cannot load ONNX model{where}: {e}") from None
    meta = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    recorded = meta.get(PAYLOAD_KEY)
    if recorded and (GRAPH_FIELD not in fields or hashlib.sha256(fields[GRAPH_FIELD][0]).hexdigest() != recorded):
        raise MnistCnnError(f"cannot load ONNX model{where}: its weights do not match the SHA-256 recorded when it "
                            f"was exported (the file is damaged or was altered): export or download it again")
    return meta, data


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


def usable_cores() -> int:
    """The CPU cores this process may run on: a container or taskset may allow fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------- the engines
class OnnxEngine:
    """Logits from an ONNX file on ONNX Runtime (no torch)."""

    name = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, chunk: int = 32):
        """threads: Python threads that run slices of a large batch at once (default: the usable cores);
        chunk: images per slice, the unit of work one thread takes (16-256 measure alike here)."""
        self.path = Path(path)
        self.metadata, data = read_onnx(self.path)  # the bytes checked are the bytes run
        self.meta = ModelMeta.from_strings(self.metadata)
        self.session = new_session(data)
        self.threads = max(1, threads or usable_cores())
        self.chunk = max(1, chunk)
        self._pool = None  # a ThreadPoolExecutor, made on the first batch larger than a chunk
        self._pool_lock = threading.Lock()

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: x})[0]

    def logits(self, x: np.ndarray) -> np.ndarray:
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


class TorchEngine:
    """Logits from a checkpoint with PyTorch (imported here, only when this engine is used)."""

    name = "torch"

    def __init__(self, ckpt_path: str | Path, device: str = "cpu"):
        import torch

        from mnist_cnn.checkpoint import load_checkpoint
        from mnist_cnn.model import build_model

        ckpt = load_checkpoint(ckpt_path)
        self.torch = torch
        try:
            self.model = build_model(ckpt.get("model_name", "tutorial"))
        except KeyError as e:
            raise MnistCnnError(f"{ckpt_path}: {e.args[0]}") from None
        self.model.load_state_dict(ckpt["model"])
        self.model.eval().to(device)
        self.meta = ModelMeta.from_checkpoint(ckpt, sum(p.numel() for p in self.model.parameters()))
        self.device = device

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            return self.model(t[:, None]).float().cpu().numpy()
