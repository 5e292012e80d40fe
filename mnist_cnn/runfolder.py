"""A training run's folder: one training at a time in it, and a resume that continues the same run.

``lock_run_folder`` takes an exclusive ``flock`` on ``<run>/.lock`` for as long as the training process lives;
the operating system releases it when the process ends in any way (even ``kill -9``), so a lock is never
stale. A second training on the same folder stops at once with the first one's process id, instead of
resuming from its half-finished checkpoint and overwriting its files.

``check_same_run`` compares the configuration a checkpoint was trained with against the one asked for now.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from mnist_cnn import MnistCnnError, RunInUse

# The numbered checkpoints in <run>/checkpoints/, cp-{step:07d}.pt: checkpoint.py writes and prunes them,
# resolve.py (which must not import torch) picks the newest.
CP_PATTERN = re.compile(r"^cp-(\d{7,})\.pt$")
# A different value makes it another run, refused on --resume auto: its weights' initialisation and shuffling
# (seed), or what it trains on (data, limit, holdout, mix_mnist). The model is checked by run.Run.resume.
SAME_RUN_FIELDS = ("seed", "data", "limit", "holdout", "mix_mnist")
# A different value is allowed with a warning: the run continues with the new recipe from the step it reached
# (e.g. more --epochs to train longer).
RECIPE_FIELDS = ("lr", "schedule", "epochs", "augment", "outliers", "label_smoothing", "ema")


def make_run_folder(path: Path) -> None:
    """Create the run folder; MnistCnnError naming it when it is a file or cannot be created."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MnistCnnError(f"run folder {path} is a file, not a folder: choose another --run-dir") from None
    except OSError as e:
        raise MnistCnnError(f"cannot create run folder {path}: {e.strerror or e}") from None


def lock_run_folder(path: Path) -> int:
    """An open file descriptor holding the exclusive lock on ``path/.lock``; close it to release the lock.

    Raises RunInUse (with the holder's process id) when another process holds it.
    """
    import fcntl

    make_run_folder(path)
    lock = path / ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise MnistCnnError(f"cannot write in run folder {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunInUse(f"run folder {path} is in use by pid {holder} (another training): wait for it to finish, "
                       f"stop it, or choose another --run-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_same_run(saved: dict, wanted: dict, where: Path) -> None:
    """Refuse to continue a checkpoint of another run (SAME_RUN_FIELDS); warn when the recipe changes."""
    differ = [k for k in SAME_RUN_FIELDS if k in saved and k in wanted and saved[k] != wanted[k]]
    if differ:
        was = ", ".join(f"--{k.replace('_', '-')} {saved[k]!r}" for k in differ)
        now = ", ".join(f"{wanted[k]!r}" for k in differ)
        raise MnistCnnError(f"{where} holds a run trained with {was} (asked for now: {now}); a run continues only "
                            f"with the same seed and data: pass those values to continue it, another --run-dir "
                            f"for a new run, or --resume never to start over in this folder")
    for k in RECIPE_FIELDS:
        if k in saved and k in wanted and saved[k] != wanted[k]:
            print(f"warning: {where} was trained with --{k} {saved[k]!r}; continuing with {wanted[k]!r} from the "
                  f"step it reached", file=sys.stderr)
