"""Checkpoints: atomic writes, plain data only, a format version, keep-last-N, last and best.

Files in ``<run>/checkpoints/``: ``cp-{step:07d}.pt`` (the tutorial's ``cp-`` prefix), ``last.pt`` (the newest
state) and ``best.pt`` (the best test accuracy). Every file loads with ``torch.load(weights_only=True)``, so a
checkpoint cannot run code when opened.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import torch

from mnist_cnn import MnistCnnError
from mnist_cnn.resolve import CP_PATTERN

FORMAT_VERSION = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync it, then os.replace: a crash leaves the old file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (weights_only=True); raise MnistCnnError if it is damaged or foreign."""
    path = Path(path)
    if not path.is_file():
        raise MnistCnnError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for foreign objects, RuntimeError/EOFError when truncated
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MnistCnnError(f"cannot load checkpoint {path}: {first}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "format_version" not in ckpt:
        raise MnistCnnError(f"{path} is not an mnist-cnn checkpoint (no format_version/model entries)")
    if ckpt["format_version"] > FORMAT_VERSION:
        raise MnistCnnError(f"{path} has checkpoint format {ckpt['format_version']}; this mnist-cnn reads "
                            f"up to {FORMAT_VERSION}: upgrade mnist-cnn")
    return ckpt


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class CheckpointManager:
    """Saves ``cp-*.pt``, ``last.pt`` and ``best.pt`` in one folder and finds the latest good one."""

    def __init__(self, folder: str | Path, keep: int = 3):
        self.folder = Path(folder)
        self.keep = keep

    def numbered(self) -> list[tuple[int, Path]]:
        """``cp-*.pt`` files as (step, path), oldest first, from their names."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := CP_PATTERN.match(p.name))]
        return sorted(found)

    def save(self, state: dict, best: bool = False) -> Path:
        """Write ``cp-{step}.pt`` and ``last.pt`` (and ``best.pt`` when best), then prune old ones."""
        self.folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save({"format_version": FORMAT_VERSION, **state}, buf)
        data = buf.getvalue()
        path = self.folder / f"cp-{state['step']:07d}.pt"
        atomic_write(path, data)
        atomic_write(self.folder / "last.pt", data)
        if best:
            atomic_write(self.folder / "best.pt", data)
        for _, old in self.numbered()[: -self.keep] if self.keep > 0 else []:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> tuple[Path, dict] | None:
        """The newest loadable checkpoint (highest step), skipping damaged files with a warning."""
        best_found: tuple[Path, dict] | None = None
        candidates = [p for _, p in reversed(self.numbered())]
        if (self.folder / "last.pt").is_file():
            candidates.insert(0, self.folder / "last.pt")
        for path in candidates:
            try:
                ckpt = load_checkpoint(path)
            except MnistCnnError as e:
                _warn(f"skipping damaged checkpoint: {e}")
                continue
            if best_found is None or ckpt["step"] > best_found[1]["step"]:
                best_found = (path, ckpt)
            if path.name != "last.pt":
                break  # numbered files are in descending step order: the first good one is the newest
        return best_found
