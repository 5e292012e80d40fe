"""Accuracy on user-like images: the tutorial's preprocessing against ``preprocess.to_mnist``, same model.

    PYTHONPATH=. python bench/bench_realistic.py [--checkpoint runs/mnist] [--per-style 200] [--seed 0]

The images come from ``bench/realistic.py`` (MNIST *test* digits drawn as users make them), built once and
cached in a temp folder (``--cache``). Read with the same model: (a) tutorial: ``convert('L')``, resize to
28×28, invert; (b) ours: ``to_mnist``; (c) originals: the 28×28 MNIST digits the images were drawn from, i.e.
the model's own errors on these digits. An image counts as right only when every digit is read, in order (the
tutorial reads one digit per image, so it never gets a number right). Prints a table per style and writes
bench/results/realistic.json with the figures and every failure of ours (file, truth, read, original read).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realistic  # noqa: E402  (bench/realistic.py, next to this file)

from mnist_cnn.data import load_mnist  # noqa: E402
from mnist_cnn.predict import Predictor  # noqa: E402
from mnist_cnn.preprocess import to_mnist  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def load_set(per_style: int, seed: int, cache: Path, rebuild: bool) -> list[dict]:
    """The cached set when it matches (per_style, seed), else build and cache it."""
    manifest = cache / "manifest.json"
    meta = {"per_style": per_style, "seed": seed, "styles": realistic.STYLES, "version": realistic.VERSION}
    if rebuild or not manifest.is_file() or {k: json.loads(manifest.read_text()).get(k) for k in meta} != meta:
        t0 = time.perf_counter()
        realistic.write(realistic.build(per_style, seed), cache, meta)
        print(f"built {cache} in {time.perf_counter() - t0:.0f} s")
    items = json.loads(manifest.read_text())["items"]
    return [{**it, "path": cache / it["file"]} for it in items]


def tutorial(path: Path) -> np.ndarray:
    """The tutorial's recipe: grey, squash to 28×28, invert. (1,28,28)."""
    a = np.asarray(Image.open(path).convert("L").resize((28, 28)), dtype=np.float32)
    return ((255.0 - a) / 255.0)[None]


def read_all(items: list[dict], predictor: Predictor, prep) -> tuple[list[str], list[float]]:
    """The number read in each image (digits left to right, "" for none) and the preprocessing ms."""
    reads, ms = [], []
    for it in items:
        t0 = time.perf_counter()
        x = prep(it["path"])
        ms.append((time.perf_counter() - t0) * 1e3)
        reads.append("".join(str(int(d)) for d in predictor.assess(x)[0].argmax(1)) if len(x) else "")
    return reads, ms


def read_originals(items: list[dict], predictor: Predictor) -> list[str]:
    """What the model reads on the 28×28 MNIST originals of each image (its own errors, whatever the input)."""
    images, _ = load_mnist("test")
    return ["".join(str(int(d)) for d in predictor.assess(images[it["mnist_test_indices"]] / 255.0)[0].argmax(1))
            for it in items]


def score(items: list[dict], reads: dict[str, list[str]], ms: list[float]) -> dict:
    table = {}
    for style in realistic.STYLES + ["overall"]:
        idx = [i for i, it in enumerate(items) if style in ("overall", it["style"])]
        row = {"n": len(idx)}
        for name, got in reads.items():
            row[name] = 100.0 * sum(got[i] == items[i]["label"] for i in idx) / len(idx)
        row["ours_wrong_count"] = sum(len(reads["ours"][i]) != len(items[i]["label"]) for i in idx)
        row["ours_ms_median"] = statistics.median(ms[i] for i in idx)
        table[style] = row
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist", help="checkpoint or run folder (default: runs/mnist)")
    p.add_argument("--per-style", type=int, default=200, help="images per style (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the set (default: 0)")
    p.add_argument("--cache", default=None, help="folder for the images (default: <tmp>/mnist-cnn-realistic-…)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the images even if cached")
    p.add_argument("--out", default=str(RESULTS / "realistic.json"), help="JSON report (default: %(default)s)")
    args = p.parse_args()
    cache = Path(args.cache or Path(tempfile.gettempdir()) / f"mnist-cnn-realistic-s{args.seed}-n{args.per_style}")
    items = load_set(args.per_style, args.seed, cache, args.rebuild)
    predictor = Predictor.from_checkpoint(args.checkpoint)
    tut, _ = read_all(items, predictor, tutorial)
    ours, ms = read_all(items, predictor, to_mnist)
    originals = read_originals(items, predictor)
    table = score(items, {"tutorial": tut, "ours": ours, "originals": originals}, ms)
    print(f"{'style':18} {'n':>5} {'tutorial %':>10} {'ours %':>8} {'originals %':>11} {'wrong count':>11} "
          f"{'ms (median)':>11}")
    for style, r in table.items():
        print(f"{style:18} {r['n']:5d} {r['tutorial']:10.1f} {r['ours']:8.1f} {r['originals']:11.1f} "
              f"{r['ours_wrong_count']:11d} {r['ours_ms_median']:11.1f}")
    failures = [{"file": it["file"], "truth": it["label"], "read": got, "original_read": orig}
                for it, got, orig in zip(items, ours, originals) if got != it["label"]]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"checkpoint": str(predictor.checkpoint), "per_style": args.per_style,
                                          "seed": args.seed, "cache": str(cache), "table": table,
                                          "failures": failures}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
