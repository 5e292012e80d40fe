"""Batch inference on the 10,000 MNIST test images: ONNX Runtime and PyTorch backends, several batch sizes.

Run: PYTHONPATH=. .venv/bin/python bench/bench_infer.py [--checkpoint runs/mnist] [--repeats 5] [--no-compile]

Every configuration scores the same 10k float32 images (already scaled to [0,1]; the ``/255`` is not timed)
and returns (10000,10) logits. Repeats are interleaved across configurations (round robin), so load from
elsewhere on the machine hits them alike; img/s is 10,000 / the median pass time; cpu_s is the process CPU
time of one pass (all threads), and img_per_cpu_s = 10,000 / cpu_s: times the cores, an estimate of what an
otherwise idle machine gives (spinning threads waiting for work count as busy). Without a checkpoint, a
fresh untrained tutorial CNN is used: the speed of this network does not depend on its weights. Prints a table and writes bench/results/infer.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, table, write_json  # noqa: E402

from mnist_cnn.data import load_mnist  # noqa: E402
from mnist_cnn.export import MnistGraph, _export_bytes, _finish, export_onnx, load_model  # noqa: E402
from mnist_cnn.engine import OnnxEngine, new_session, usable_cores  # noqa: E402

TARGET = 30_000  # img/s: twice the tutorial's best (Keras, batch 1024: 14,900 img/s)


def bench_checkpoint(where: str | None, tmp: Path) -> Path:
    """``where`` when it holds a checkpoint, else a fresh untrained tutorial checkpoint in ``tmp``."""
    from mnist_cnn.checkpoint import CheckpointManager
    from mnist_cnn.model import build_model
    from mnist_cnn.resolve import resolve

    if where and Path(where).exists() and resolve(where, "torch").checkpoint:
        return resolve(where, "torch").checkpoint
    torch.manual_seed(0)
    model = build_model("tutorial")
    return CheckpointManager(tmp / "checkpoints").save({"model_name": "tutorial", "model": model.state_dict(),
                                                       "step": 0, "best_acc": 0.0}, best=True)


def ort_intra(session, threads: int, batch: int):
    """ONNX Runtime's own intra-op thread pool on consecutive batches."""
    def run(x):
        return np.concatenate([session.run(None, {"images": x[i:i + batch]})[0] for i in range(0, len(x), batch)])
    return run


def intra_session(data: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def torch_runner(model, batch: int, channels_last: bool):
    model = model.to(memory_format=torch.channels_last) if channels_last else model

    @torch.inference_mode()
    def run(x):
        t = torch.from_numpy(x)
        outs = []
        for i in range(0, len(t), batch):
            b = t[i:i + batch, None]
            outs.append(model(b.contiguous(memory_format=torch.channels_last) if channels_last else b))
        return torch.cat(outs).numpy()
    return run


def configurations(ckpt: Path, onnx_path: Path, cores: int, compile_too: bool) -> list[tuple[str, str, object]]:
    """(backend, setting, callable) for every configuration compared."""
    model, meta = load_model(ckpt)
    uncropped = _finish(_export_bytes(MnistGraph(model, (0, 0)), "auto")[0], meta)
    configs = []
    for chunk in (16, 32, 64, 128, 256):
        configs.append(("ort slices", f"{cores} threads x chunk {chunk}", OnnxEngine(onnx_path, cores, chunk).logits))
    uncropped_path = onnx_path.with_name("uncropped.onnx")
    uncropped_path.write_bytes(uncropped)
    configs.append(("ort slices, no crop", f"{cores} threads x chunk 32", OnnxEngine(uncropped_path, cores, 32).logits))
    configs.append(("ort 1 thread", "batch 32", ort_intra(new_session(onnx_path), 1, 32)))
    for batch in (64, 256, 1000, 10_000):
        session = intra_session(onnx_path.read_bytes(), cores)
        configs.append(("ort intra-op", f"{cores} threads, batch {batch}", ort_intra(session, cores, batch)))
    torch.set_num_threads(cores)
    for batch in (256, 1024):
        configs.append(("torch eager", f"batch {batch}", torch_runner(load_model(ckpt)[0], batch, False)))
        configs.append(("torch eager channels_last", f"batch {batch}", torch_runner(load_model(ckpt)[0], batch, True)))
    if compile_too:
        compiled = torch.compile(load_model(ckpt)[0].to(memory_format=torch.channels_last))
        configs.append(("torch.compile channels_last", "batch 1024", torch_runner(compiled, 1024, True)))
    return configs


def measure(configs, x: np.ndarray, labels: np.ndarray, repeats: int) -> list[dict]:
    rows = []
    for backend, setting, run in configs:  # warm-up pass (compilation for torch.compile) and a correctness check
        t0 = time.perf_counter()
        logits = run(x)
        rows.append({"backend": backend, "setting": setting, "first_pass_s": round(time.perf_counter() - t0, 2),
                     "accuracy": round(float((logits.argmax(1) == labels).mean()), 4), "walls": [], "cpus": []})
    for _ in range(repeats):  # round robin: load drift from other processes hits every configuration alike
        for row, (_, _, run) in zip(rows, configs):
            w, c = time.perf_counter(), time.process_time()
            run(x)
            row["walls"].append(time.perf_counter() - w)
            row["cpus"].append(time.process_time() - c)
    for row in rows:
        row["img_per_s"] = round(len(x) / median(row["walls"]))
        row["best_img_per_s"] = round(len(x) / min(row["walls"]))
        row["cpu_s"] = round(median(row.pop("cpus")), 3)
        row["img_per_cpu_s"] = round(len(x) / row["cpu_s"])  # less sensitive to other processes than wall time
        row["walls"] = [round(w, 4) for w in row["walls"]]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist", help="checkpoint or run folder (default: runs/mnist; "
                                                               "absent: an untrained tutorial CNN)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per configuration (default: 5)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compile takes a minute)")
    args = p.parse_args()
    images, labels = load_mnist("test")
    x = images.astype(np.float32) / 255.0
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = bench_checkpoint(args.checkpoint, Path(tmp))
        onnx_path = export_onnx(ckpt, Path(tmp) / "model.onnx").out
        rows = measure(configurations(ckpt, onnx_path, cores, not args.no_compile), x, labels, args.repeats)
    best = max(rows, key=lambda r: r["img_per_s"])
    baseline = next(r for r in rows if r["backend"] == "torch eager" and r["setting"] == "batch 1024")
    for r in rows:
        r["vs_torch_eager_1024"] = round(r["img_per_s"] / baseline["img_per_s"], 2)
    print(table(rows, ["backend", "setting", "img_per_s", "best_img_per_s", "img_per_cpu_s", "vs_torch_eager_1024",
                       "accuracy", "first_pass_s"]))
    print(f"\nbest: {best['backend']} ({best['setting']}): {best['img_per_s']:,} img/s, median of {args.repeats} "
          f"passes over 10,000 images; target {TARGET:,}: {'met' if best['img_per_s'] >= TARGET else 'missed'}")
    path = write_json("infer", {"checkpoint": str(ckpt) if Path(args.checkpoint).exists() else "untrained",
                                "cores": cores, "repeats": args.repeats, "target_img_per_s": TARGET,
                                "best": {k: best[k] for k in ("backend", "setting", "img_per_s")}, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
