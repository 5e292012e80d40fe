"""The shipped models: train each recipe from scratch, then publish it into the package (``make models``).

    python scripts/models.py                                   # every recipe: train, measure, publish
    python scripts/models.py --only tutorial                   # one recipe
    python scripts/models.py publish RUN_DIR --name NAME       # publish a finished run as NAME

Publishing a run writes ``mnist_cnn/models/<name>.onnx`` (exported from the run's best.pt) and
``<name>.json``, its provenance: the exact train command, seed, commit, SHA-256 of the training data files and
of the ONNX file, the calibration (temperature, reject energy) and the accuracies measured on the ONNX file
as shipped: MNIST test (the network alone, what ``evaluate`` scores), Semeion (``../shared/data/semeion``
when present, each image read as ``mnist-cnn predict`` reads it) and the user-like set of bench/realistic.py
(200 per style, seed 0). tests/test_shipped.py checks the files against their provenance.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # bench_realistic: the user-like set; common: the commit

from common import commit  # noqa: E402

# The published recipes: name → the flags of `mnist-cnn train`; each is trained from scratch in
# runs/models/<name> with --resume never. Both use the robust recipe (augmentation, synthetic non-digits,
# label smoothing, a moving average of the weights; docs/training.md); every recipe listed is shipped.
ROBUST = ["--augment", "--outliers", "0.125", "--label-smoothing", "0.05", "--ema", "0.999", "--batch-size", "128",
          "--lr", "3e-3", "--seed", "0"]
RECIPES: dict[str, list[str]] = {
    "strong": ["--model", "strong", "--epochs", "16", *ROBUST],
    "tutorial": ["--model", "tutorial", "--epochs", "15", *ROBUST],
}
SEMEION = ROOT.parent / "shared" / "data" / "semeion"


def train_command(config: dict) -> str:
    """The `mnist-cnn train` command line that reproduces a run's config.json (every flag spelled out)."""
    from mnist_cnn.config import TrainConfig

    flags = []
    for name, value in config.items():
        if name not in TrainConfig.__dataclass_fields__:
            continue
        flag = "--" + name.replace("_", "-")
        flags += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return shlex.join(["mnist-cnn", "train", *flags])


def data_hashes(config: dict) -> dict[str, str]:
    """SHA-256 of each training data file (the bundled MNIST unless the run named its own --data)."""
    from mnist_cnn.data import BUNDLED, sha256

    source = Path(config.get("data") or BUNDLED)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    hashes = {str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p): sha256(p) for p in files}
    if config.get("mix_mnist"):
        hashes.update({f"data/mnist/{p.name}": sha256(p) for p in sorted(BUNDLED.glob("train-*"))})
    return hashes


def semeion_accuracy(predictor) -> float | None:
    """Share of Semeion images read right by the predict path (``<label>/<n>.png``); None without the set."""
    files = sorted(SEMEION.glob("[0-9]/*.png")) if SEMEION.is_dir() else []
    if not files:
        return None
    return sum(predictor.predict_file(p).number == p.parent.name for p in files) / len(files)


def user_like_accuracy(predictor) -> float:
    """Share of the user-like set (bench/realistic.py, 200 per style, seed 0) read right, every digit in order."""
    import tempfile

    import bench_realistic

    from mnist_cnn.preprocess import to_mnist

    items = bench_realistic.load_set(200, 0, Path(tempfile.gettempdir()) / "mnist-cnn-realistic-s0-n200", False)
    reads, _ = bench_realistic.read_all(items, predictor, to_mnist)
    return sum(r == it["label"] for r, it in zip(reads, items)) / len(items)


def measure(onnx_path: Path) -> dict:
    from mnist_cnn.data import load_mnist
    from mnist_cnn.evaluate import score
    from mnist_cnn.predict import Predictor

    predictor = Predictor.from_checkpoint(onnx_path)
    images, labels = load_mnist("test")
    scored = score(predictor, images, labels)
    return {"mnist_test": round(float((scored.predicted == scored.labels).mean()), 6),
            "semeion": semeion_accuracy(predictor), "user_like": user_like_accuracy(predictor)}


def publish(run: Path, name: str, command: str | None = None) -> dict:
    """Export ``run``'s best.pt into the package as ``name`` and write its provenance; returns the record."""
    from mnist_cnn.data import sha256
    from mnist_cnn.engine import ModelMeta, read_onnx
    from mnist_cnn.export import export_onnx
    from mnist_cnn.resolve import SHIPPED

    config = json.loads((run / "config.json").read_text())
    out = export_onnx(run, SHIPPED / f"{name}.onnx").out
    meta = ModelMeta.from_strings(read_onnx(out)[0])
    accuracy = {k: None if v is None else round(v, 6) for k, v in measure(out).items()}
    record = {"name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": command or train_command(config), "seed": config.get("seed"),
              "commit": commit(short=False, ignore="mnist_cnn/models"),  # the models are written first
              "model_name": meta.model_name, "parameters": meta.parameters, "step": meta.step,
              "onnx": {"file": out.name, "bytes": out.stat().st_size, "sha256": sha256(out)},
              "training_data_sha256": data_hashes(config), "temperature": meta.temperature,
              "reject_energy": meta.reject_energy, "accuracy": accuracy, "config": config}
    (SHIPPED / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"published {name}: {out} ({record['onnx']['bytes'] / 1024:.0f} KiB), accuracy {accuracy}")
    return record


def train_and_publish(name: str) -> dict:
    run = ROOT / "runs" / "models" / name
    argv = ["mnist-cnn", "train", *RECIPES[name], "--run-dir", str(run.relative_to(ROOT)), "--resume", "never"]
    subprocess.run([sys.executable, "-m", "mnist_cnn", *argv[1:]], cwd=ROOT, check=True)
    return publish(run, name, shlex.join(argv))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", nargs="?", default="all", choices=("all", "publish"))
    p.add_argument("run", nargs="?", help="publish: the finished run folder")
    p.add_argument("--name", help="publish: the shipped model's name")
    p.add_argument("--only", choices=sorted(RECIPES), help="all: train and publish this recipe only")
    args = p.parse_args()
    if args.action == "publish":
        if not (args.run and args.name):
            p.error("publish needs RUN_DIR and --name")
        publish(Path(args.run), args.name)
        return
    for name in [args.only] if args.only else RECIPES:
        train_and_publish(name)


if __name__ == "__main__":
    main()
