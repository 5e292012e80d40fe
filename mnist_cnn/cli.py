"""``mnist-cnn <command> …``: one table of subcommands, each with its own flags and help.

Errors a user can act on (MnistCnnError) are printed as one line, ``error: …``, with exit status 2.
torch is imported only by the commands that need it, so ``predict`` on an ONNX model starts fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from mnist_cnn import MnistCnnError, __version__
from mnist_cnn.resolve import DEFAULT_RUN, resolve, shipped

# What the reading install leaves out: a command that needs one of these names the extra that brings it.
TRAIN_EXTRA = ("torch", "onnx", "onnxscript", "h5py")


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    names = ", ".join(shipped()) or "none in this install"
    p.add_argument("--checkpoint", default=None,
                   help=f"a run folder, a checkpoint (.pt) or ONNX file, or a shipped model's name ({names}) "
                        f"(default: your run {DEFAULT_RUN} when it holds a model, else the best shipped model)")


def chosen_model(args: argparse.Namespace):
    """The model ``--checkpoint`` names, resolved; without one, a line on stderr says which was picked."""
    model = resolve(args.checkpoint, args.engine)
    if model.note:
        print(model.note, file=sys.stderr)
    return model


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="auto", choices=("auto", "onnx", "torch"),
                   help="auto: ONNX Runtime when the run has an in-step model.onnx, else PyTorch (default: auto)")


# ---------------------------------------------------------------- train
def add_train_args(p: argparse.ArgumentParser) -> None:
    from mnist_cnn.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=f.default, choices=f.metadata.get("choices"), help=help_text)


def cmd_train(args: argparse.Namespace) -> int:
    from mnist_cnn.config import TrainConfig
    from mnist_cnn.train import train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    train(cfg)
    return 0


# ---------------------------------------------------------------- summary
def add_summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tutorial", help="model from the registry (default: tutorial)")


def cmd_summary(args: argparse.Namespace) -> int:
    from mnist_cnn.model import build_model, summary

    try:
        model = build_model(args.model)
    except KeyError as e:
        raise MnistCnnError(e.args[0]) from None
    print(summary(model))
    return 0


# ---------------------------------------------------------------- predict
PROGRESS_MIN = 10  # a progress bar (on a terminal) from this many images on
CSV_FIELDS = ["source", "number", "verdict", "position", "digit", "status", "confidence", "energy",
              *[f"p{i}" for i in range(10)], "error"]


def add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG, JPEG, …), folders (their images, searched recursively) or glob patterns "
                        "such as 'scans/**/*.jpg' (expanded here too, so quoting them is fine)")
    add_checkpoint_arg(p)
    add_engine_arg(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    out.add_argument("--csv", action="store_true", help="CSV with a header: one row per digit (per image when none)")
    p.add_argument("--single", action="store_true", help="read each image as one digit (do not split numbers)")
    p.add_argument("--save-preprocessed", metavar="DIR",
                   help="write the 28×28 images the model saw to DIR as <image>_<i>.png, one per digit")
    p.add_argument("--no-progress", action="store_true",
                   help=f"no progress bar (else one on stderr, on a terminal, from {PROGRESS_MIN} images on)")


def format_prediction(pred) -> str:
    """The tutorial's report (10 probabilities, the digit), one block per digit, and a verdict when not ok."""
    lines = [pred.source]
    if not pred.digits:
        return "\n".join(lines + ["  no digit found"])
    many = len(pred.digits) > 1
    if many:
        shown = "".join(str(d) if s == "ok" else "?" for d, s in zip(pred.digits, pred.status))
        lines.append(f"  number: {pred.number}  ({len(pred.digits)} digits, left to right"
                     + (f"; unsure ones marked: {shown})" if "?" in shown else ")"))
    pad = "    " if many else "  "
    for i, (digit, probs, conf, reason) in enumerate(zip(pred.digits, pred.probabilities, pred.confidence,
                                                         pred.reasons)):
        if many:
            lines.append(f"  digit {i + 1}:")
        lines.append(pad + "probabilities: " + " ".join(f"{d}:{p:.4f}" for d, p in enumerate(probs)))
        lines.append(pad + (f"unsure: {reason} (looks most like {digit}, confidence {conf:.4f})" if reason
                            else f"predicted digit: {digit}  (confidence {conf:.4f})"))
    if pred.verdict != "ok":
        lines.append(f"  verdict: {pred.verdict}")
    return "\n".join(lines)


def csv_rows(pred=None, source: str = "", error: str = "") -> list[list]:
    if pred is None:
        return [[source, "", "error", "", "", "", "", "", *[""] * 10, error]]
    if not pred.digits:
        return [[pred.source, "", pred.verdict, "", "", "", "", "", *[""] * 10, ""]]
    return [[pred.source, pred.number, pred.verdict, i + 1, d, s, f"{c:.6f}", f"{e:.4f}",
             *[f"{p:.6f}" for p in probs], ""]
            for i, (d, s, c, e, probs) in enumerate(zip(pred.digits, pred.status, pred.confidence, pred.energy,
                                                        pred.probabilities))]


def _emitter(args: argparse.Namespace, write):
    """A function that prints a result (or an error) in the chosen format with ``write(text, file=…)`` (a progress
    bar's write keeps the bar below the lines)."""
    import csv
    import io

    def write_rows(rows: list[list]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        write(buf.getvalue().rstrip("\n"), file=sys.stdout)

    def emit(pred=None, source: str = "", error: str = "") -> None:
        if error:
            write(f"error: {error}", file=sys.stderr)
        if args.csv:
            write_rows(csv_rows(pred, source, error))
        elif args.json:
            write(json.dumps(pred.to_dict() if pred else {"source": source, "error": error}), file=sys.stdout)
        elif pred is not None:
            write(format_prediction(pred), file=sys.stdout)

    if args.csv:
        write_rows([CSV_FIELDS])
    return emit


def cmd_predict(args: argparse.Namespace) -> int:
    from mnist_cnn.predict import Predictor, expand_inputs, save_inputs

    items = expand_inputs(args.images)
    predictor = Predictor.from_checkpoint(chosen_model(args), engine=args.engine)
    bar = None
    if not args.no_progress and len(items) >= PROGRESS_MIN:  # import tqdm only for a bar: it slows a cold start
        from tqdm import tqdm

        bar = tqdm(items, unit="image", file=sys.stderr, disable=None, leave=False)
    emit, taken, counts = _emitter(args, bar.write if bar else print), set(), {}
    for path, problem in bar if bar else items:
        try:
            if problem:
                raise MnistCnnError(problem)
            pred = predictor.predict_file(path, single=args.single)
        except Exception as e:  # one bad file does not stop the batch; the exit status tells at the end
            message = str(e) if isinstance(e, MnistCnnError) else f"{path}: {type(e).__name__}: {e}"
            emit(source=path, error=message)
            counts["error"] = counts.get("error", 0) + 1
            continue
        if args.save_preprocessed:
            save_inputs(pred, Path(args.save_preprocessed), taken)
        emit(pred)
        counts[pred.verdict] = counts.get(pred.verdict, 0) + 1
    if len(items) > 1:
        print(f"{len(items)} images: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr)
    if counts.get("error"):
        print(f"error: {counts['error']} of {len(items)} images could not be read", file=sys.stderr)
    return 1 if counts.get("error") else 0


# ---------------------------------------------------------------- evaluate
def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    add_checkpoint_arg(p)
    p.add_argument("--data", default="", help="MNIST IDX folder, mnist.npz, or a folder of your labelled images "
                                              "(<digit>/… or <digit>_….png) (default: the bundled MNIST)")
    p.add_argument("--split", default=None, choices=("test", "train", "all"),
                   help="MNIST: test or train (default: test); an image folder: all, or its train/test part "
                        "(every 5th image of each digit is test) (default: all)")
    p.add_argument("--out", default=None, help="report folder (default: <run folder>/report)")
    add_engine_arg(p)
    p.add_argument("--limit", type=int, default=0, help="score only the first N images (default: 0, all)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mnist_cnn.evaluate import evaluate, summary_line

    report = evaluate(chosen_model(args), data=args.data or None, split=args.split, out=args.out,
                      engine=args.engine, limit=args.limit)
    print(summary_line(report))
    print(f"report: {Path(report['out']) / 'report.html'}")
    return 0


# ---------------------------------------------------------------- import-keras
def add_import_keras_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="Keras weights: a Keras 3 .weights.h5 or .keras, or a Keras 2 .h5")
    p.add_argument("--out", default=None, help="checkpoint to write (default: FILE's name with .pt, next to it)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="score the imported weights on the MNIST test set (default: True)")


def cmd_import_keras(args: argparse.Namespace) -> int:
    from mnist_cnn.keras_import import default_out, import_keras

    done = import_keras(args.file, args.out or default_out(args.file), check=args.check)
    print(f"read {done['layers']} layers ({done['parameters']:,} parameters) from {args.file} ({done['format']})")
    if done["accuracy"] is not None:
        print(f"MNIST test accuracy of the imported weights: {done['accuracy']:.4f}")
    print(f"wrote {done['out']}; predict with: mnist-cnn predict --checkpoint {done['out']} IMAGE")
    return 0


# ---------------------------------------------------------------- serve
def add_serve_args(p: argparse.ArgumentParser) -> None:
    add_checkpoint_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the server to your network (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--threads", type=int, default=None,
                   help="predictions run at once in each process, in worker threads (default: the CPU cores, "
                        "divided among the --workers)")
    p.add_argument("--workers", type=int, default=None,
                   help="server processes sharing the port, each with its own model (default: one per CPU core "
                        "this process may use, which serves the most requests; 1 where the system has no "
                        "SO_REUSEPORT)")
    add_engine_arg(p)


def cmd_serve(args: argparse.Namespace) -> int:
    from mnist_cnn.serve import serve

    if args.workers is not None and args.workers < 1:
        raise MnistCnnError(f"--workers must be at least 1, not {args.workers}")
    serve(chosen_model(args), host=args.host, port=args.port, threads=args.threads, engine=args.engine,
          workers=args.workers)
    return 0


# ---------------------------------------------------------------- export
def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=str(DEFAULT_RUN),
                   help=f"checkpoint file or run folder (default: {DEFAULT_RUN}, its best.pt)")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="output format (default: onnx)")
    p.add_argument("--out", default=None,
                   help="output file (default: model.onnx in the checkpoint's run folder, where predict finds it)")
    p.add_argument("--exporter", default="auto", choices=("auto", "torchscript", "dynamo"),
                   help="torch.onnx exporter; auto: TorchScript (seconds faster) when this torch has it, else dynamo "
                        "(default: auto)")


def cmd_export(args: argparse.Namespace) -> int:
    from mnist_cnn.export import export_onnx

    print(export_onnx(args.checkpoint, args.out, exporter=args.exporter).summary())
    return 0


# ---------------------------------------------------------------- models
def add_models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=str(DEFAULT_RUN.parent),
                   help=f"folder of run folders (default: {DEFAULT_RUN.parent})")


def cmd_models(args: argparse.Namespace) -> int:
    from mnist_cnn.resolve import catalogue

    rows = catalogue(Path(args.runs))
    if not rows:
        print(f"no models: none shipped with this install and none under {args.runs}/ (mnist-cnn train makes one)")
        return 0

    def pct(v):
        return f"{v:.2%}" if v is not None else "-"

    print(f"{'name':24} {'kind':8} {'MNIST test':>10} {'Semeion':>8} {'user-like':>9} {'size':>9}  file")
    for r in rows:
        print(f"{r['name']:24} {r['kind']:8} {pct(r['mnist_test']):>10} {pct(r['semeion']):>8} "
              f"{pct(r['user_like']):>9} {r['bytes'] / 1024:7.0f} K  {r['file']}")
    return 0


# ---------------------------------------------------------------- the table
COMMANDS: dict[str, tuple[str, callable, callable]] = {
    "train": ("train the CNN on MNIST (or --data); torchrun -m mnist_cnn train for several processes",
              add_train_args, cmd_train),
    "predict": ("read digits in image files and print the 10 probabilities and the prediction",
                add_predict_args, cmd_predict),
    "summary": ("print the model's layers, output shapes and parameter counts", add_summary_args, cmd_summary),
    "export": ("export a checkpoint to ONNX (dynamic batch), checked against PyTorch", add_export_args, cmd_export),
    "serve": ("HTTP API and a drawing page (http://127.0.0.1:8000/) for the model", add_serve_args, cmd_serve),
    "evaluate": ("score a checkpoint on MNIST or your labelled images; write a report with plots (HTML, JSON, PNG)",
                 add_evaluate_args, cmd_evaluate),
    "models": ("list the models --checkpoint can name: the shipped ones and your runs, with accuracy and size",
               add_models_args, cmd_models),
    "import-keras": ("convert the TensorFlow tutorial's Keras weights (.weights.h5, Keras 2 .h5) to a checkpoint",
                     add_import_keras_args, cmd_import_keras),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-cnn", description="Handwritten digit recognition with a CNN.")
    parser.add_argument("--version", action="version", version=f"mnist-cnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MnistCnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        print(f"error: mnist-cnn {args.command} needs {e.name}, which the reading install leaves out: "
              f"pip install 'mnist-cnn[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:  # disk full, a read-only folder…: one line that names the file
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
