"""How well one model reads digits it was not trained on: MNIST test, other writers, user-like images, non-digits.

    apt-get install -y dataset-fashion-mnist    # the non-digits (evaluation only, never trained on)
    PYTHONPATH=. python bench/bench_generalise.py --checkpoint runs/strong [--semeion ../shared/data/semeion]

One table per model, every row through the same ``Predictor`` a user's ``mnist-cnn predict`` uses:
* MNIST test: the network alone on the 10,000 28×28 test digits (the figure training reports).
* Semeion: 1,593 digits by ~80 writers MNIST never saw, 16×16 scans stretched to fill their box, read as
  files through the predict path (right = the number read is the label; unsure = verdict "unsure"); beside
  it the tutorial's preprocessing (grey, squash to 28×28, invert) with the same network. A development set:
  look at its errors, never train on it.
* user-like: bench/realistic.py's images (15 styles of MNIST test digits drawn as users make them).
* not a digit: Fashion-MNIST test images rejected, and MNIST test digits falsely rejected (as files).
Prints the table and Semeion's most frequent confusions; writes bench/results/generalise-<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_realistic  # noqa: E402
import bench_reject  # noqa: E402
from common import ROOT, table, write_json  # noqa: E402

from mnist_cnn.data import load_mnist  # noqa: E402
from mnist_cnn.predict import OK, UNSURE, Predictor  # noqa: E402

SEMEION = ROOT.parent / "shared" / "data" / "semeion"
TARGETS = {"mnist_test": "strong >= 99.7, tutorial >= 99.4", "semeion": ">= 97, unsure <= 3",
           "user_like": ">= 99.5, every style >= 98", "fashion": ">= 97 rejected", "mnist_rejected": "<= 1"}


def semeion_files(folder: Path) -> list[tuple[Path, str]]:
    return [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir() for p in sorted(d.glob("*.png"))]


def semeion_rows(predictor: Predictor, folder: Path) -> tuple[list[dict], dict]:
    files = semeion_files(folder)
    preds = [predictor.predict_file(p) for p, _ in files]
    truth = [label for _, label in files]
    right = [p.number == t for p, t in zip(preds, truth)]
    unsure = [p.verdict == UNSURE for p in preds]
    tut = [str(int(predictor.assess(bench_realistic.tutorial(p))[0].argmax())) for p, _ in files]
    confusions = Counter(f"{t}->{p.number or 'none'}" for p, t, r in zip(preds, truth, right) if not r)
    ok_right = [r for r, p in zip(right, preds) if p.verdict == OK]
    rows = [{"measure": "Semeion, read right % (ours)", "value": pct(right), "target": TARGETS["semeion"]},
            {"measure": "Semeion, unsure %", "value": pct(unsure), "target": ""},
            {"measure": "Semeion, right among 'ok' %", "value": pct(ok_right), "target": ""},
            {"measure": "Semeion, read right % (tutorial preprocessing)",
             "value": pct([a == b for a, b in zip(tut, truth)]), "target": ""}]
    errors = {"confusions": dict(confusions.most_common(15)),
              "wrong": [{"file": str(f), "truth": t, "read": p.number, "verdict": p.verdict}
                        for (f, t), p, r in zip(files, preds, right) if not r]}
    return rows, errors


def pct(flags: list[bool]) -> float:
    return round(100 * float(np.mean(flags)), 2) if len(flags) else float("nan")


def user_like_rows(predictor: Predictor, per_style: int) -> tuple[list[dict], dict]:
    cache = Path(tempfile.gettempdir()) / f"mnist-cnn-realistic-s0-n{per_style}"
    items = bench_realistic.load_set(per_style, 0, cache, rebuild=False)
    ours, ms = bench_realistic.read_all(items, predictor, bench_realistic.to_mnist)
    scored = bench_realistic.score(items, {"ours": ours}, ms)
    styles = {k: round(v["ours"], 2) for k, v in scored.items() if k != "overall"}
    worst = min(styles, key=styles.get)
    rows = [{"measure": "user-like set, read right %", "value": round(scored["overall"]["ours"], 2),
             "target": TARGETS["user_like"]},
            {"measure": f"user-like set, worst style % ({worst})", "value": styles[worst], "target": ""}]
    return rows, styles


def rejection_rows(predictor: Predictor, limit: int) -> list[dict]:
    digits, labels = load_mnist("test", limit)
    fashion, _ = bench_reject.load_fashion(limit)
    mnist_preds, _ = bench_reject.read_images(predictor, digits, single=False)
    fashion_preds, _ = bench_reject.read_images(predictor, fashion, single=False)
    return [{"measure": "Fashion-MNIST rejected %", "value": pct([p.verdict != OK for p in fashion_preds]),
             "target": TARGETS["fashion"]},
            {"measure": "MNIST test falsely rejected %", "value": pct([p.verdict != OK for p in mnist_preds]),
             "target": TARGETS["mnist_rejected"]}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/mnist", help="run folder, checkpoint or .onnx (default: runs/mnist)")
    p.add_argument("--name", default=None, help="name in the JSON file's name (default: the run folder's name)")
    p.add_argument("--semeion", default=str(SEMEION), help="Semeion folder (default: %(default)s)")
    p.add_argument("--per-style", type=int, default=200, help="user-like images per style (default: 200; 0: skip)")
    p.add_argument("--limit", type=int, default=10_000, help="MNIST/Fashion images for rejection (default: 10000)")
    args = p.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint)
    images, labels = load_mnist("test")
    acc = float((predictor.predict_arrays(images / np.float32(255)).argmax(1) == labels).mean())
    rows = [{"measure": "MNIST test accuracy % (network alone)", "value": round(100 * acc, 2),
             "target": TARGETS["mnist_test"]}]
    details: dict = {}
    if Path(args.semeion).is_dir():
        more, details["semeion"] = semeion_rows(predictor, Path(args.semeion))
        rows += more
    else:
        print(f"note: no Semeion folder at {args.semeion}: its rows are skipped", file=sys.stderr)
    if args.per_style:
        more, details["user_like_styles"] = user_like_rows(predictor, args.per_style)
        rows += more
    if args.limit:
        rows += rejection_rows(predictor, args.limit)
    print(table(rows, ["measure", "value", "target"]))
    if "semeion" in details:
        print("Semeion confusions (truth->read: count): " + ", ".join(
            f"{k}: {v}" for k, v in details["semeion"]["confusions"].items()))
    name = args.name or Path(args.checkpoint).name
    info = {k: predictor.describe().get(k) for k in ("model_name", "step", "best_acc", "temperature", "reject_energy")}
    path = write_json(f"generalise-{name}", {"checkpoint": str(predictor.checkpoint), "model": info,
                                             "rows": rows, **details})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
