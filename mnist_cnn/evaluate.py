"""Evaluation report: ``mnist-cnn evaluate [--checkpoint runs/mnist] [--data my_digits/] [--out DIR]``.

Scores a checkpoint on the MNIST test set (default), another IDX folder or ``mnist.npz``, or a folder of
your own labelled images (see ``folder_data``), and writes a report folder:

    report.json     accuracy, per-class precision/recall/F1, confusion matrix, top confusions, mistakes
    confusion.png   the confusion matrix with counts in the cells
    mistakes.png    the most confident misreads: image, truth, guess, confidence
    history.png     loss and accuracy per epoch, from the run's metrics.csv (when the run has one)
    report.html     one self-contained page with all of the above (images embedded)
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mnist_cnn import MnistCnnError
from mnist_cnn.resolve import Model, resolve

N_CLASSES = 10
GRID_MISTAKES = 32  # images in mistakes.png; report.json lists up to MAX_LISTED
MAX_LISTED = 200


@dataclass
class Scored:
    """What the model said about each image of an evaluation set."""

    images: np.ndarray  # (N,28,28) uint8, ink bright
    labels: np.ndarray  # (N,) int64 truth
    predicted: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float, the probability of the predicted digit
    sources: list[str] | None = None  # file per image (folders), else None


# ---------------------------------------------------------------- metrics (numpy only)
def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int = N_CLASSES) -> np.ndarray:
    """(k,k) int64 counts: rows are the true digit, columns the predicted one."""
    return np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)


def per_class_metrics(cm: np.ndarray) -> list[dict]:
    """Precision, recall and F1 per digit; 0.0 where a ratio has nothing to divide by."""
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [{"digit": d, "support": int(actual[d]), "precision": round(float(precision[d]), 6),
             "recall": round(float(recall[d]), 6), "f1": round(float(f1[d]), 6)} for d in range(len(cm))]


def top_confusions(cm: np.ndarray, n: int = 10) -> list[dict]:
    """The n most frequent (truth, predicted) pairs off the diagonal, most frequent first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [{"truth": int(t), "predicted": int(p), "count": int(off[t, p])} for t, p in pairs if off[t, p]]


def summarise(s: Scored) -> dict:
    """The numbers of report.json (no file names yet)."""
    cm = confusion_matrix(s.labels, s.predicted)
    per_class = per_class_metrics(cm)
    wrong = np.flatnonzero(s.predicted != s.labels)
    wrong = wrong[np.argsort(-s.confidence[wrong], kind="stable")]  # most confident mistakes first
    mistakes = [{"index": int(i), "truth": int(s.labels[i]), "predicted": int(s.predicted[i]),
                 "confidence": round(float(s.confidence[i]), 6),
                 **({"source": s.sources[i]} if s.sources else {})} for i in wrong[:MAX_LISTED]]
    return {"images": int(len(s.labels)), "accuracy": round(float(np.trace(cm) / max(cm.sum(), 1)), 6),
            "errors": int(len(wrong)),
            "macro": {k: round(float(np.mean([c[k] for c in per_class])), 6) for k in ("precision", "recall", "f1")},
            "per_class": per_class, "confusion_matrix": cm.tolist(), "top_confusions": top_confusions(cm),
            "mistakes": mistakes}


# ---------------------------------------------------------------- data and predictions
def load_eval_set(data: str | None, split: str | None, limit: int = 0):
    """(images uint8, labels, sources or None, skipped, description) for ``--data``/``--split``."""
    from mnist_cnn.data import load_digits

    path = Path(data) if data else None
    is_folder = path is not None and path.is_dir() and not any(path.glob("*idx*"))
    if is_folder:
        from mnist_cnn.folder_data import read_image_folder

        fd = read_image_folder(path, split or "all")
        n = limit or len(fd.labels)
        return (fd.images[:n], fd.labels[:n], [str(p) for p in fd.paths[:n]],
                [{"path": str(p), "reason": r} for p, r in fd.skipped], f"{path} ({split or 'all'} images)")
    split = split or "test"
    if split == "all":
        raise MnistCnnError("--split all is for folders of labelled images; MNIST has 'train' and 'test'")
    images, labels = load_digits(data, split, limit)
    return images, labels, None, [], f"{data or 'MNIST'} ({split} split)"


def score(predictor, images: np.ndarray, labels: np.ndarray, sources=None, batch: int = 1000) -> Scored:
    """Run the predictor over uint8 images in batches."""
    probs = np.concatenate([predictor.predict_arrays(images[i:i + batch].astype(np.float32) / 255.0)
                            for i in range(0, len(images), batch)]) if len(images) else np.zeros((0, N_CLASSES))
    return Scored(images, labels.astype(np.int64), probs.argmax(1).astype(np.int64), probs.max(1), sources)


# ---------------------------------------------------------------- the report folder
def _short_name(path: Path) -> str:
    """``3/scan.png`` for a file in a label folder, else the file name."""
    return f"{path.parent.name}/{path.name}" if path.parent.name.isdigit() else path.name


def draw_pictures(report: dict, s: Scored, out: Path, metrics_csv: Path | None) -> list[str]:
    """Write confusion.png, mistakes.png and (when the run has metrics.csv) history.png; their names. None
    without matplotlib (the ``report`` extra): the report is then numbers only, and says so."""
    if importlib.util.find_spec("matplotlib") is None:
        print("note: the report's pictures need matplotlib: pip install 'mnist-cnn[report]'", file=sys.stderr)
        return []
    from mnist_cnn import plots

    headline = f"accuracy {report['accuracy']:.2%} on {report['images']:,} images of {report['data']}"
    plots.plot_confusion(np.asarray(report["confusion_matrix"]), out / "confusion.png",
                         f"Confusion matrix: {headline}")
    shown = [m["index"] for m in report["mistakes"][:GRID_MISTAKES]]
    captions = [_short_name(Path(s.sources[i])) for i in shown] if s.sources else None
    plots.plot_mistakes(s.images[shown], s.labels[shown], s.predicted[shown], s.confidence[shown],
                        out / "mistakes.png", f"The {len(shown)} most confident of {report['errors']:,} "
                        f"misread images (truth → guess)", captions)
    names = ["confusion.png", "mistakes.png"]
    if metrics_csv is not None and plots.plot_history(metrics_csv, out / "history.png",
                                                       f"Training history: {metrics_csv}"):
        names.append("history.png")
    return names


def _table(header: list[str], rows: list[list], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr class='{classes[i] if classes else ''}'>" + "".join(f"<td>{html.escape(str(c))}</td>"
                   for c in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.big{font-size:2.2em;font-weight:600}.muted{color:#666}table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:right}tr.weak{background:#fff1f1}
img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 .25em}
.row{display:flex;flex-wrap:wrap;gap:0 4em}"""


def render_html(report: dict, out: Path) -> str:
    """One self-contained page: the numbers as tables, the pictures embedded as base64 PNGs."""
    esc = html.escape
    per = report["per_class"]
    weakest = min(per, key=lambda c: (c["f1"], c["digit"]))["digit"]
    class_rows = [[c["digit"], f"{c['support']:,}", f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}"]
                  for c in per] + [["macro avg", f"{report['images']:,}", *(f"{report['macro'][k]:.4f}"
                                    for k in ("precision", "recall", "f1"))]]
    confusions = [[f"{c['truth']} → {c['predicted']}", c["count"]] for c in report["top_confusions"]]
    pictures = "".join(
        f"<h2>{esc(caption)}</h2><img alt='{esc(name)}' src='data:image/png;base64,"
        f"{base64.b64encode((out / name).read_bytes()).decode()}'>"
        for name, caption in (("confusion.png", "Confusion matrix (rows: true digit, columns: prediction)"),
                              ("mistakes.png", "Misread images"), ("history.png", "Training history"))
        if name in report["files"])
    skipped = (f"<h2>Skipped images ({len(report['skipped'])})</h2>" + _table(
        ["file", "reason"], [[s["path"], s["reason"]] for s in report["skipped"]])) if report["skipped"] else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>mnist-cnn evaluation: {report['accuracy']:.2%}</title><style>{CSS}</style></head><body>
<h1>mnist-cnn evaluation report</h1>
<p class="big">{report['accuracy']:.2%} correct</p>
<p>{report['images']:,} images of {esc(report['data'])}; {report['errors']:,} misread.<br>
<span class="muted">checkpoint <code>{esc(report['checkpoint'])}</code> ({esc(report['engine'])} engine),
{esc(report['created'])}</span></p>
<div class="row"><div><h2>Per digit</h2>{_table(["digit", "images", "precision", "recall", "F1"], class_rows,
                          ["weak" if i == weakest else "" for i in range(len(class_rows))])}
<p class="muted">The weakest digit (lowest F1) is highlighted.</p></div>
<div><h2>Most frequent confusions</h2>{_table(["true → predicted", "images"], confusions) if confusions
                                         else "<p>none</p>"}</div></div>
{pictures}{skipped}</body></html>
"""


def evaluate(checkpoint: str | Path | Model | None, data: str | None = None, split: str | None = None,
             out: str | Path | None = None, engine: str = "auto", limit: int = 0) -> dict:
    """Score ``checkpoint`` on ``data`` and write the report folder; returns report.json's content.

    Args:
        checkpoint: what ``--checkpoint`` takes (resolve.py): a run folder, a checkpoint or ONNX file, a
            shipped model's name, None for the default model, or a resolved ``resolve.Model``.
        data: None for MNIST, or an IDX folder, an mnist.npz, or a folder of labelled images.
        split: "test"/"train" (MNIST, default test) or "all"/"test"/"train" (folders, default all).
        out: report folder; default ``<run folder>/report`` (``reports/<name>/report`` for a shipped model).
    """
    from mnist_cnn.predict import Predictor

    model = checkpoint if isinstance(checkpoint, Model) else resolve(checkpoint, engine)
    predictor = Predictor.from_checkpoint(model, engine=engine)
    images, labels, sources, skipped, description = load_eval_set(data, split, limit)
    scored = score(predictor, images, labels, sources)
    run = model.run or Path("reports") / Path(predictor.checkpoint).stem  # a shipped model has no run folder
    out = Path(out) if out else run / "report"
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "checkpoint": str(predictor.checkpoint), "engine": predictor.engine.name, "data": description,
              **summarise(scored), "skipped": skipped}
    out.mkdir(parents=True, exist_ok=True)
    metrics = run / "metrics.csv"
    report["files"] = draw_pictures(report, scored, out, metrics if metrics.is_file() else None)
    report["files"] += ["report.json", "report.html"]
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.html").write_text(render_html(report, out))
    report["out"] = str(out)
    return report


def summary_line(report: dict) -> str:
    """A short human summary for the terminal."""
    weakest = min(report["per_class"], key=lambda c: (c["f1"], c["digit"]))
    top = report["top_confusions"][0] if report["top_confusions"] else None
    return (f"accuracy {report['accuracy']:.4f} on {report['images']:,} images ({report['errors']:,} misread); "
            f"weakest digit {weakest['digit']} (F1 {weakest['f1']:.4f})"
            + (f"; most frequent confusion {top['truth']} → {top['predicted']} ({top['count']}×)" if top else ""))
