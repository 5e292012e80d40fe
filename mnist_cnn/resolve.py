"""What ``--checkpoint`` names, resolved to the files to load (no torch): ``resolve("runs/mnist")``.

    PYTHONPATH=. python -c "from mnist_cnn.resolve import resolve; print(resolve(None))"

``--checkpoint`` takes a run folder, its ``checkpoints/`` folder, a checkpoint file, an ONNX file, or the name
of a model shipped in the package (``mnist_cnn/models/<name>.onnx``, each with a ``<name>.json`` provenance
file). A path that exists wins over a shipped name. Without it: the user's own run (``runs/mnist``, where
``mnist-cnn train`` writes) when it holds a model, else the shipped model with the best MNIST test accuracy.

A run folder runs on its ``model.onnx`` when that file was exported from exactly the checkpoint the folder
resolves to and its weights are intact; else on the checkpoint (PyTorch), with a warning that says why.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from mnist_cnn import MnistCnnError
from mnist_cnn.engine import ONNX_NAME, read_onnx
from mnist_cnn.runfolder import CP_PATTERN

DEFAULT_RUN = Path("runs/mnist")
SHIPPED = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class Model:
    """The files behind one ``--checkpoint`` value."""

    label: str  # how to name it to the user
    onnx: Path | None = None  # an ONNX file to run (ONNX Runtime), when there is a usable one
    checkpoint: Path | None = None  # a checkpoint to run with PyTorch
    run: Path | None = None  # the run folder (metrics.csv, the default report folder); None when shipped
    note: str = ""  # one line saying which model was picked, when nothing was named


def shipped() -> dict[str, Path]:
    """The models the package ships: name → ONNX file."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.onnx"))}


def provenance(name: str) -> dict:
    """The provenance record of a shipped model (how it was trained, its files' SHA-256, its accuracies)."""
    path = SHIPPED / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MnistCnnError(f"cannot read the provenance of the shipped model {name!r}: {e}") from None


def checkpoint_in(folder: Path) -> Path | None:
    """The checkpoint a folder stands for: best.pt, else last.pt, else the newest cp-*.pt (by name)."""
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    numbered = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CP_PATTERN.match(p.name)))
    return numbered[-1][1] if numbered else None


def run_of(path: Path) -> Path:
    """The run folder of a checkpoint file or folder: ``run/checkpoints/best.pt`` → ``run``."""
    folder = path if path.is_dir() else path.parent
    return folder.parent if folder.name == "checkpoints" else folder


def usable_onnx(onnx_path: Path, checkpoint: Path | None, warn: bool) -> Path | None:
    """``onnx_path`` when it exists, is intact and was exported from ``checkpoint`` (any, when None)."""
    from mnist_cnn.data import sha256

    if not onnx_path.is_file():
        return None
    if checkpoint is None:
        return onnx_path  # an ONNX-only deployment: the engine checks it, and fails if it is damaged
    try:
        meta, _ = read_onnx(onnx_path)
    except MnistCnnError as e:
        problem = str(e)
    else:
        if meta.get("checkpoint_sha256") == sha256(checkpoint):
            return onnx_path
        problem = f"{onnx_path} is out of step with {checkpoint} (exported from other weights)"
    if warn:
        print(f"warning: {problem}; predicting with PyTorch from {checkpoint}. "
              f"Refresh it with: mnist-cnn export --checkpoint {checkpoint}", file=sys.stderr)
    return None


def _from_path(path: Path, engine: str) -> Model:
    want_onnx = engine != "torch"
    if path.suffix == ".onnx" and path.is_file():
        return Model(str(path), onnx=path, run=path.parent)
    if path.is_file():
        run = run_of(path)
        onnx = usable_onnx(run / ONNX_NAME, path, want_onnx) if want_onnx else None
        return Model(str(path), onnx=onnx, checkpoint=path, run=run)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    run = run_of(folder)
    checkpoint = checkpoint_in(folder) if folder.is_dir() else None
    onnx = usable_onnx(run / ONNX_NAME, checkpoint, want_onnx) if want_onnx or checkpoint is None else None
    if checkpoint is None and onnx is None:
        raise MnistCnnError(f"no checkpoint in {path}: train first (mnist-cnn train) or pass --checkpoint")
    return Model(str(path), onnx=onnx, checkpoint=checkpoint, run=run)


def holds_model(folder: Path) -> bool:
    """True when a run folder has something to load (a checkpoint or a model.onnx)."""
    if (folder / ONNX_NAME).is_file():
        return True
    ckpts = folder / "checkpoints"
    return ckpts.is_dir() and checkpoint_in(ckpts) is not None


def best_shipped() -> str | None:
    """The shipped model with the highest recorded MNIST test accuracy (None when none is shipped)."""
    names = list(shipped())
    return max(names, key=lambda n: (provenance(n).get("accuracy", {}).get("mnist_test", 0.0), n)) if names else None


def default_model(engine: str = "auto") -> Model:
    """The user's own run when it holds a model, else the best shipped model; ``note`` says which."""
    if DEFAULT_RUN.is_dir() and holds_model(DEFAULT_RUN):
        model = _from_path(DEFAULT_RUN, engine)
        return Model(**{**model.__dict__, "note": f"using your run {DEFAULT_RUN} (--checkpoint picks another model)"})
    name = best_shipped()
    if name is None:
        raise MnistCnnError(f"no model: {DEFAULT_RUN} holds none and this install ships none; "
                            f"train one (mnist-cnn train) or pass --checkpoint")
    acc = provenance(name).get("accuracy", {}).get("mnist_test")
    told = f", MNIST test accuracy {acc:.2%}" if acc else ""
    return Model(f"shipped model {name!r}", onnx=shipped()[name],
                 note=f"using the shipped model {name!r}{told} (mnist-cnn train makes your own in {DEFAULT_RUN}; "
                      f"mnist-cnn models lists the others)")


def resolve(where: str | Path | None = None, engine: str = "auto") -> Model:
    """The files to load for a ``--checkpoint`` value (None: the default model, see ``default_model``).

    engine: "torch" skips looking for an ONNX file (and its warnings).
    """
    if where is None or str(where) == "":
        return default_model(engine)
    path = Path(where)
    if path.exists():
        return _from_path(path, engine)
    if str(where) in shipped():
        return Model(f"shipped model {str(where)!r}", onnx=shipped()[str(where)])
    names = ", ".join(shipped()) or "none in this install"
    raise MnistCnnError(f"no model at {where}: not a file, a folder or a shipped model name ({names})")


# ---------------------------------------------------------------- what is available
def _run_accuracy(run: Path) -> float | None:
    """A run's test accuracy: from its model.onnx, else the best test_acc of its metrics.csv."""
    import csv

    try:
        return float(read_onnx(run / ONNX_NAME)[0]["best_acc"])
    except (MnistCnnError, KeyError, ValueError):
        pass
    try:
        with open(run / "metrics.csv", newline="") as f:
            return max(float(row["test_acc"]) for row in csv.DictReader(f))
    except (OSError, KeyError, ValueError):
        return None


def catalogue(runs: Path = Path("runs")) -> list[dict]:
    """Every model ``--checkpoint`` can name here: the shipped ones, then the run folders under ``runs``."""
    rows = []
    for name, path in shipped().items():
        acc = provenance(name).get("accuracy", {})
        rows.append({"name": name, "kind": "shipped", "mnist_test": acc.get("mnist_test"),
                     "semeion": acc.get("semeion"), "user_like": acc.get("user_like"),
                     "bytes": path.stat().st_size, "file": str(path)})
    for run in sorted(p for p in runs.iterdir() if p.is_dir() and holds_model(p)) if runs.is_dir() else []:
        file = run / ONNX_NAME if (run / ONNX_NAME).is_file() else checkpoint_in(run / "checkpoints")
        rows.append({"name": str(run), "kind": "run", "mnist_test": _run_accuracy(run), "semeion": None,
                     "user_like": None, "bytes": file.stat().st_size, "file": str(file)})
    return rows
