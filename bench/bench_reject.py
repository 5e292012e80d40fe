"""How often ``predict`` says "unsure"/"no digit found": digits (should be rare) against non-digits (should be most).

    apt-get install -y dataset-fashion-mnist        # non-digit examples; used here only, never in training
    PYTHONPATH=. python bench/bench_reject.py [--checkpoint runs/mnist] [--limit 10000] [--per-style 40]

Every image goes through ``Predictor.predict_image`` as a user's file would (``preprocess.to_mnist``, splitting
into digits, then the verdict); an image counts as rejected when the verdict is "unsure" or "no digit found".
Sets: MNIST test digits (target: <= 1 % rejected), Fashion-MNIST test images (target: >= 90 % rejected), and
the user-like digits of bench/realistic.py per style (drawings, photos, blur, …: false rejections a real
user would meet). Reference rows feed the 28×28 arrays to the model directly, skipping preprocessing.
The rates are deterministic (one pass); the per-image time is a median over all images, on a shared,
noisy machine. Prints a table and writes bench/results/reject.json (reject-single.json with --single).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, table, write_json  # noqa: E402

from mnist_cnn import calibrate  # noqa: E402
from mnist_cnn.data import load_mnist, read_idx  # noqa: E402
from mnist_cnn.predict import NO_DIGIT, OK, Predictor  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def load_fashion(limit: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        return (read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:limit],
                read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:limit])
    except Exception as e:
        sys.exit(f"error: Fashion-MNIST not found under {FASHION} ({e}): apt-get install -y dataset-fashion-mnist")


def read_images(predictor: Predictor, sources, single: bool) -> tuple[list, list[float]]:
    """(predictions, ms per image) for images given as uint8 arrays (ink bright) or file paths/bytes."""
    preds, ms = [], []
    for src in sources:
        t0 = time.perf_counter()
        img = Image.fromarray(src) if isinstance(src, np.ndarray) else src
        preds.append(predictor.predict_image(img, single=single))
        ms.append((time.perf_counter() - t0) * 1e3)
    return preds, ms


def summary(name: str, preds: list, ms: list[float] | None = None, truth: list[str] | None = None) -> dict:
    verdicts = Counter(p.verdict for p in preds)
    accepted = [i for i, p in enumerate(preds) if p.verdict == OK]
    row = {"set": name, "images": len(preds), "rejected %": round(100 * (1 - verdicts[OK] / len(preds)), 2),
           "unsure %": round(100 * verdicts["unsure"] / len(preds), 2),
           "no digit %": round(100 * verdicts[NO_DIGIT] / len(preds), 2)}
    if truth is not None:
        right = sum(preds[i].number == truth[i] for i in accepted)
        row["accepted right %"] = round(100 * right / max(1, len(accepted)), 2)
        row["all right %"] = round(100 * sum(p.number == t for p, t in zip(preds, truth)) / len(preds), 2)
    if ms:
        row["ms/image"] = round(median(ms), 2)
    return row


def raw_rows(predictor: Predictor, digits: np.ndarray, fashion: np.ndarray) -> list[dict]:
    """The same tests on the 28×28 arrays without preprocessing (what the detector does on its own)."""
    rows = []
    for name, x in (("MNIST test, raw 28x28", digits), ("Fashion-MNIST, raw 28x28", fashion)):
        probs, _, reasons = predictor.assess(x.astype(np.float32) / 255)
        rows.append({"set": name, "images": len(x), "rejected %": round(100 * np.mean([bool(r) for r in reasons]), 2)})
    return rows


def realistic_rows(predictor: Predictor, per_style: int) -> tuple[list[dict], dict]:
    import realistic  # bench/realistic.py: MNIST test digits drawn as users make them

    items = realistic.build(per_style, seed=0)
    preds, ms = read_images(predictor, [it["data"] for it in items], single=False)
    rows, failures = [], {}
    for style in realistic.STYLES:
        idx = [i for i, it in enumerate(items) if it["style"] == style]
        rows.append(summary(f"user-like: {style}", [preds[i] for i in idx], [ms[i] for i in idx],
                            [items[i]["label"] for i in idx]))
        failures[style] = [{"truth": items[i]["label"], "read": preds[i].number, "verdict": preds[i].verdict,
                            "reasons": preds[i].reasons} for i in idx if preds[i].verdict != OK]
    rows.insert(0, summary("user-like digits, all styles", preds, ms, [it["label"] for it in items]))
    return rows, failures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist", help="checkpoint or run folder (default: runs/mnist)")
    p.add_argument("--engine", default="auto", choices=("auto", "onnx", "torch"), help="(default: auto)")
    p.add_argument("--limit", type=int, default=10_000, help="images of each test set (default: 10000)")
    p.add_argument("--per-style", type=int, default=40, help="user-like digits per style (default: 40; 0: skip)")
    p.add_argument("--single", action="store_true", help="read every image as one digit (predict --single)")
    args = p.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint, engine=args.engine)
    info = predictor.describe()
    if predictor.reject_energy is None:
        print("warning: this model has no reject_energy: only confidence and stroke tests apply", file=sys.stderr)
    digits, labels = load_mnist("test")
    digits, labels = digits[:args.limit], labels[:args.limit]
    fashion, fashion_labels = load_fashion(args.limit)
    mnist_preds, mnist_ms = read_images(predictor, digits, args.single)
    fashion_preds, fashion_ms = read_images(predictor, fashion, args.single)
    rows = [summary("MNIST test digits (target <= 1 %)", mnist_preds, mnist_ms, [str(int(y)) for y in labels]),
            summary("Fashion-MNIST test (target >= 90 %)", fashion_preds, fashion_ms)]
    rows += raw_rows(predictor, digits, fashion)
    failures = {}
    if args.per_style:
        more, failures = realistic_rows(predictor, args.per_style)
        rows += more
    per_class = {name: round(100 * np.mean([fashion_preds[i].verdict != OK for i in np.nonzero(fashion_labels == c)[0]]), 1)
                 for c, name in enumerate(FASHION_CLASSES)}
    reasons = Counter(r for p in fashion_preds for r in p.reasons if r)
    columns = ["set", "images", "rejected %", "unsure %", "no digit %", "accepted right %", "all right %", "ms/image"]
    print(table(rows, columns))
    print("Fashion-MNIST rejected per class (%): " + ", ".join(f"{k} {v}" for k, v in per_class.items()))
    method = {"unsure when": info["unsure_when"], "temperature": predictor.temperature,
              "reject_energy": predictor.reject_energy, "min_confidence": predictor.min_confidence,
              "max_stroke_radius": calibrate.MAX_STROKE_RADIUS,
              "max_core_pixels": calibrate.MAX_CORE_PIXELS, "held_out_reject_rate": calibrate.REJECT_RATE,
              "single": args.single}
    path = write_json("reject-single" if args.single else "reject", {"checkpoint": str(predictor.checkpoint), "engine": predictor.engine.name,
                                 "method": method, "rows": rows, "fashion_rejected_per_class": per_class,
                                 "fashion_reasons": dict(reasons), "user_like_rejections": failures,
                                 "targets": {"mnist_rejected_max_pct": 1.0, "fashion_rejected_min_pct": 90.0}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
