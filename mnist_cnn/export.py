"""ONNX export of a checkpoint, checked against PyTorch: ``mnist-cnn export --checkpoint runs/mnist``.

    PYTHONPATH=. python -m mnist_cnn export --checkpoint runs/mnist            # → runs/mnist/model.onnx
    python -c "from mnist_cnn.export import export_onnx; export_onnx('runs/mnist/checkpoints/best.pt')"

The graph takes ``images``: (N,28,28) float32 in [0,1], ink bright on dark, N dynamic, and returns ``logits``:
(N,10) float32 (softmax and the temperature stay at the edge, in the predictor). The add-a-channel reshape is
in the graph, and so is a crop of the border the network never sees: the tutorial CNN's floor-mode pooling
drops its last 2 rows and columns, so slicing them off first gives the same logits with 15 % less work.

The file records where it came from in its ``metadata_props`` (``engine.ModelMeta``, the checkpoint's
SHA-256, and the SHA-256 of the graph itself), which is how resolve.py tells, without importing torch, whether
a ``model.onnx`` is still in step with ``best.pt`` and intact. Every export passes ``onnx.checker`` and a parity check:
ONNX Runtime and PyTorch logits within ``atol`` (1e-4) on real test digits at batch sizes 1, 37 and 512.
"""

from __future__ import annotations

import copy
import io
import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_cnn import MnistCnnError, __version__
from mnist_cnn.checkpoint import atomic_write, load_checkpoint
from mnist_cnn.data import sha256
from mnist_cnn.engine import INPUT, META_PREFIX, ONNX_NAME, OUTPUT, PAYLOAD_KEY, ModelMeta, new_session, payload_sha256
from mnist_cnn.model import build_model
from mnist_cnn.resolve import resolve

OPSET = 18  # the dynamo exporter's minimum; ONNX Runtime >= 1.14 runs it
EXPORTERS = ("auto", "torchscript", "dynamo")


@dataclass
class ExportResult:
    """What ``export_onnx`` wrote and how it checked out."""

    out: Path
    checkpoint: Path
    meta: dict
    exporter: str
    crop: tuple[int, int]
    bytes: int
    max_abs_diff: float | None
    parity_images: int
    seconds: float

    def summary(self) -> str:
        m = self.meta
        lines = [f"wrote {self.out} ({self.bytes / 1024:.0f} KiB) from {self.checkpoint} "
                 f"(model {m['model_name']}, step {m['step']}, test acc {float(m['best_acc']):.4f})",
                 f"  exporter {self.exporter}, opset {OPSET}, dynamic batch, border crop "
                 f"{self.crop[0]} rows/{self.crop[1]} cols; onnx.checker passed"]
        if self.max_abs_diff is not None:
            lines.append(f"  ONNX Runtime vs PyTorch on {self.parity_images:,} images: max |logit difference| "
                         f"{self.max_abs_diff:.1e}, same argmax ({self.seconds:.1f}s)")
        return "\n".join(lines)


class MnistGraph(nn.Module):
    """(N,28,28) → (N,10): adds the channel axis and drops the border rows/columns ``model`` never uses."""

    def __init__(self, model: nn.Module, crop: tuple[int, int] = (0, 0)):
        super().__init__()
        self.model = model
        self.rows, self.cols = 28 - crop[0], 28 - crop[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, None, : self.rows, : self.cols])  # (N,1,rows,cols)


@torch.no_grad()
def unused_border(model: nn.Module, size: int = 28, most: int = 8) -> tuple[int, int]:
    """(rows at the bottom, columns at the right) of the input that never reach the logits.

    Found by experiment, so any model in the registry is handled, but on a probe of the architecture rather
    than on the trained weights: in a trained network a pixel's path can be closed by ReLUs that happen to be
    off for the test inputs, and cropping it would change other inputs' logits. The probe is a copy with every
    weight positive and BatchNorm the identity, so raising any pixel that has a path to the logits raises them.
    """
    probe = _structural_probe(model)
    x = torch.rand(4, 1, size, size, generator=torch.Generator().manual_seed(0))
    ref = probe(x)

    def unused(rows: int, cols: int) -> bool:
        y = x.clone()
        y[:, :, size - rows:, :] += 1  # rows=0: an empty slice, nothing changes
        y[:, :, :, size - cols:] += 1
        return torch.equal(probe(y), ref)

    rows = next((k - 1 for k in range(1, most + 1) if not unused(k, 0)), most)
    cols = next((k - 1 for k in range(1, most + 1) if not unused(0, k)), most)
    return rows, cols


def _structural_probe(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each layer's weights positive and equal, biases zero, BatchNorm the identity."""
    probe = copy.deepcopy(model).float().eval()
    for m in probe.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.fill_(1.0 / m.weight[0].numel())
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
            m.reset_running_stats()
    return probe


def _export_bytes(graph: nn.Module, exporter: str) -> tuple[bytes, str]:
    """Serialized ONNX of ``graph`` with a dynamic batch axis; ``auto`` tries torchscript, then dynamo.

    The TorchScript exporter (no longer the default since torch 2.9 and deprecated, still in 2.13) traces the
    model in a fraction of a second; the dynamo exporter (torch.export + onnxscript) compiles it and takes
    seconds, a noticeable share of a default training run. Both give the same layers (Slice, Unsqueeze,
    3 Conv+Relu, 2 MaxPool, Flatten, 2 Gemm).
    """
    example = (torch.rand(2, 28, 28),)
    if exporter in ("auto", "torchscript"):
        try:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation notice: a deliberate choice, see above
                torch.onnx.export(graph, example, buf, dynamo=False, opset_version=OPSET,
                                  input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
            return buf.getvalue(), "torchscript"
        except Exception as e:  # removed in a future torch, or an op it cannot express
            if exporter == "torchscript":
                raise MnistCnnError(f"the TorchScript ONNX exporter failed: {str(e).splitlines()[0]}") from None
    quiet = logging.getLogger("torch.onnx")  # it logs one warning per torchvision op it cannot register
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, example, dynamo=True, opset_version=OPSET, verbose=False,
                                        input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    except Exception as e:  # torch.export or onnxscript errors: long, multi-line
        raise MnistCnnError(f"the dynamo ONNX exporter failed: {str(e).strip().splitlines()[0]}") from None
    finally:
        quiet.setLevel(level)
    return program.model_proto.SerializeToString(), "dynamo"


def _finish(data: bytes, meta: dict) -> bytes:
    """Add the provenance metadata and the graph's SHA-256, and run onnx.checker (full check: shapes inferred
    end to end)."""
    import onnx

    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    meta = {**meta, PAYLOAD_KEY: payload_sha256(proto.SerializeToString())}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, str(value)
    proto.producer_name, proto.producer_version = "mnist-cnn", __version__
    proto.doc_string = "MNIST digit logits: images (N,28,28) float32 in [0,1], ink bright on dark → logits (N,10)"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise MnistCnnError(f"the exported graph fails onnx.checker: {str(e).splitlines()[0]}") from None
    out = proto.SerializeToString()
    if payload_sha256(out) != meta[PAYLOAD_KEY]:  # the graph must serialize to the bytes that were hashed
        raise MnistCnnError("the exported graph changed while its metadata was written")
    return out


def _parity_inputs(n: int) -> np.ndarray:
    """Real test digits (the bundled MNIST), or uniform noise where the data files are absent."""
    from mnist_cnn.data import load_mnist

    try:
        images, _ = load_mnist("test", n)
        return images.astype(np.float32) / 255.0
    except MnistCnnError:
        return np.random.default_rng(0).random((n, 28, 28), dtype=np.float32)


@torch.no_grad()
def check_parity(data: bytes, model: nn.Module, x: np.ndarray, atol: float = 1e-4) -> float:
    """Max |ONNX Runtime − PyTorch| over ``x`` at batch sizes 1, 37 and 128 (all of ``x`` in batches of 128);
    raise if above ``atol``. Batches of 128, not all at once: the activations of a whole check set at once
    would set the training run's peak memory."""
    session = new_session(data)
    ref = torch.cat([model(part[:, None]) for part in torch.from_numpy(x).split(128)]).numpy()  # without the crop
    worst = 0.0
    for lo, hi in ((0, 1), (1, 38), *((i, min(i + 128, len(x))) for i in range(0, len(x), 128))):
        got = session.run([OUTPUT], {INPUT: x[lo:hi]})[0]
        if got.shape != ref[lo:hi].shape:
            raise MnistCnnError(f"ONNX Runtime returned shape {got.shape} for batch {hi - lo}")
        worst = max(worst, float(np.abs(got - ref[lo:hi]).max()))
        if worst > atol or (got.argmax(1) != ref[lo:hi].argmax(1)).any():
            raise MnistCnnError(f"ONNX Runtime and PyTorch disagree (max |logit difference| {worst:.2e} > {atol})")
    return worst


@contextmanager
def one_torch_thread():
    """Run torch single-threaded: on these tiny batches, extra OpenMP threads only spin, and on a busy machine
    they wait for cores that other work holds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_model(ckpt_path: Path) -> tuple[nn.Module, dict]:
    """The checkpoint's model in eval mode, fp32 on the CPU, and its provenance metadata."""
    ckpt = load_checkpoint(ckpt_path)
    try:
        model = build_model(ckpt.get("model_name", "tutorial"))
    except KeyError as e:
        raise MnistCnnError(f"{ckpt_path}: {e.args[0]}") from None
    model.load_state_dict(ckpt["model"])
    meta = ModelMeta.from_checkpoint(ckpt, sum(p.numel() for p in model.parameters())).to_strings()
    meta.update(checkpoint_sha256=sha256(ckpt_path), checkpoint_file=ckpt_path.name)
    return model.eval().float(), meta


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, *, exporter: str = "auto",
                check: bool = True, atol: float = 1e-4, parity_images: int = 512) -> ExportResult:
    """Export ``checkpoint`` (a .pt file or a run folder: its best.pt) to ONNX, check it, write it atomically.

    Args:
        out: the .onnx file (a folder: model.onnx in it); default model.onnx in the checkpoint's run folder,
            where ``predict`` looks for it.
        exporter: "auto" (TorchScript when this torch still has it, else dynamo), "torchscript" or "dynamo".
        check: compare ONNX Runtime with PyTorch on ``parity_images`` test digits before writing.
    """
    if exporter not in EXPORTERS:
        raise MnistCnnError(f"unknown exporter {exporter!r}; choose one of: {', '.join(EXPORTERS)}")
    t0 = time.perf_counter()
    source = resolve(checkpoint, engine="torch")
    if source.checkpoint is None:
        raise MnistCnnError(f"{source.label} has no checkpoint to export (it is an ONNX model already)")
    ckpt_path = source.checkpoint
    out = source.run / ONNX_NAME if out is None else Path(out)
    out = out / ONNX_NAME if out.is_dir() else out
    model, meta = load_model(ckpt_path)
    with one_torch_thread():
        crop = unused_border(model)
        # eval() on the wrapper too: the exporter restores the wrapper's mode, recursively, when it is done
        raw, used = _export_bytes(MnistGraph(model, crop).eval(), exporter)
        data = _finish(raw, meta)
        diff = check_parity(data, model, _parity_inputs(parity_images), atol) if check else None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, data)
    except OSError as e:
        raise MnistCnnError(f"cannot write {out}: {e.strerror or e}") from None
    return ExportResult(out, ckpt_path, meta, used, crop, len(data), diff, parity_images if check else 0,
                        time.perf_counter() - t0)
