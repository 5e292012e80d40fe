"""Checkpoints: atomic writes, plain data only, a format version, keep-last-N, last and best.

Files in ``<run>/checkpoints/``: ``cp-{step:07d}.pt`` (the tutorial's ``cp-`` prefix), ``last.pt`` (the newest
state) and ``best.pt`` (chosen on held-out images: recipe.is_best). Every file loads with
``torch.load(weights_only=True)``, so a checkpoint cannot run code when opened. Each file records the SHA-256 of its contents (``payload_sha256``,
over every tensor's bytes and every other value), checked at load along with the model's layer shapes: a
flipped bit or a foreign file is an error when named explicitly and skipped by ``latest`` (resume).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from pathlib import Path

import torch

from mnist_cnn import MnistCnnError
from mnist_cnn.runfolder import CP_PATTERN

FORMAT_VERSION = 1
TMP_PATTERN = re.compile(r"^\.(.+)\.tmp(\d+)$")  # atomic_write's temp files: .<name>.tmp<pid>


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync it, then os.replace: a crash leaves the old file.

    An OSError (disk full, read-only folder…) becomes a one-line MnistCnnError naming the file.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise MnistCnnError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files that saves killed mid-write left in ``folder``: only atomic_write's name pattern,
    and only when the process named in it is gone (an ``export`` may be writing into the run folder now).

    Call it while holding the run folder's lock, so that no training of ours is writing there.
    """
    removed = []
    for p in folder.iterdir() if folder.is_dir() else []:
        m = TMP_PATTERN.match(p.name)
        if m and p.is_file() and not p.is_symlink() and not _alive(int(m.group(2))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process, or a number no pid can be
        return False
    except PermissionError:  # another user's process
        return True
    return pid > 0


def payload_digest(ckpt: dict) -> str:
    """SHA-256 of a checkpoint's contents (all but ``payload_sha256`` itself), tensors by their raw bytes."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ckpt.items() if k != "payload_sha256"})
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k, v in obj.items():
            h.update(repr(k).encode() + b":")
            _feed(h, v)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode() + b",")


def checkpoint_bytes(state: dict) -> bytes:
    """A checkpoint file's bytes: ``state`` with the format version and its payload hash."""
    ckpt = {"format_version": FORMAT_VERSION, **state}
    ckpt["payload_sha256"] = payload_digest(ckpt)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def check_model_state(path: Path, ckpt: dict) -> None:
    """MnistCnnError unless ``ckpt["model"]`` has exactly the layers and shapes of its ``model_name``."""
    from mnist_cnn.model import MODELS, build_model

    name, state = ckpt.get("model_name", "tutorial"), ckpt["model"]
    if name not in MODELS:
        raise MnistCnnError(f"{path} holds model {name!r}, unknown here (known: {', '.join(MODELS)})")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MnistCnnError(f"{path} is not an mnist-cnn checkpoint (its 'model' entry is not a state dict)")
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            model = build_model(name)
    except Exception:  # a model whose constructor computes on its tensors: built for real
        model = build_model(name)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        diff = sorted(set(found.items()) ^ set(expected.items()))[0][0]
        raise MnistCnnError(f"{path} does not fit model {name!r} (layer {diff}: "
                            f"{found.get(diff, 'missing')} in the file, {expected.get(diff, 'none')} expected)")


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
    recorded = ckpt.get("payload_sha256")  # absent in files written before it was recorded
    if recorded is not None and recorded != payload_digest(ckpt):
        raise MnistCnnError(f"{path} is damaged: its contents no longer match the SHA-256 recorded when it was saved")
    check_model_state(path, ckpt)
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
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MnistCnnError(f"cannot create {self.folder}: {e.strerror or e}") from None
        data = checkpoint_bytes(state)
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
