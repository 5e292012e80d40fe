"""torchrun detection and the few collective operations the training loop needs.

Run ``torchrun --nproc-per-node 2 -m mnist_cnn train …`` (one machine) or, on each of several machines,
``torchrun --nnodes 2 --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m mnist_cnn train …``.
torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE) is detected and the process group starts with gloo on
CPU or nccl on CUDA. Only global rank 0 prints and writes files (never LOCAL_RANK 0: on several machines there
is one of those per machine).

Stopping: Ctrl-C (SIGINT) and SIGTERM set a flag that the training loop reads between optimizer steps, in a
single process as under torchrun (which forwards both to its workers). Under torchrun the ranks agree on it
every ``STOP_CHECK_EVERY`` steps, so that all of them stop after the same step and rank 0 saves a consistent
checkpoint; a second signal exits at once, without saving.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from mnist_cnn import MnistCnnError

STOP_CHECK_EVERY = 10  # steps between stop votes: one tiny all-reduce (and host sync on CUDA) per vote


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live

    @property
    def main(self) -> bool:
        """True on the one process (global rank 0) that prints and writes."""
        return self.rank == 0


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    if not under_torchrun():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        store = restart_store(world)
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world)
        dist.init_process_group(backend, **kwargs)
    return Dist(rank, local_rank, world, device)


def restart_store(world: int) -> dist.Store | None:
    """After a torchrun restart on one machine, torchrun's store seen under a prefix of this attempt.

    torchrun shares its TCP store with the workers (TORCHELASTIC_USE_AGENT_STORE) and keeps it across
    restarts, so the restarted process group finds the keys of the attempt before it (the killed worker's
    address) and init_process_group hangs or fails (torch 2.13; pytorch/pytorch#135712). With one agent
    (GROUP_WORLD_SIZE 1) every worker has the same TORCHELASTIC_RESTART_COUNT, so it makes a safe prefix.
    Several machines: launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (see docs/scaling-out.md).
    """
    env = os.environ
    attempt = int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0 or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or env.get("GROUP_WORLD_SIZE") != "1":
        return None
    client = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, is_master=False)
    return dist.PrefixStore(f"mnist_cnn/attempt{attempt}", client)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor over ranks (returns the input unchanged in a single process)."""
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def broadcast_object(obj, d: Dist, src: int = 0):
    """Rank ``src``'s value of ``obj`` on every rank (pickled; for small things such as a checkpoint)."""
    if d.world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_object(obj, d: Dist) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if d.world <= 1:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------- resume
def agree_on_checkpoint(find: Callable[[], tuple | None], d: Dist) -> tuple | None:
    """The newest checkpoint that any rank can load, sent to every rank; None when no rank has one.

    ``find()`` returns (path, checkpoint dict), None, or raises MnistCnnError. Each rank looks in its own file
    system: on several machines without a shared disk only the machines that hosted rank 0 hold checkpoints,
    and torchrun may give rank 0 to another machine after a restart. Without this all ranks must still start
    from the same step, or the first all-reduce mixes different steps (or deadlocks).
    """
    if d.world <= 1:
        return find()
    try:
        found, error = find(), ""
    except MnistCnnError as e:
        found, error = None, str(e)
    votes = gather_object((found[1]["step"] if found else -1, error), d)
    src = max(range(d.world), key=lambda r: (votes[r][0], -r))  # highest step, lowest rank among equals
    if votes[src][0] < 0:
        errors = [e for _, e in votes if e]
        if errors:  # the same message on every rank, so that all of them stop
            raise MnistCnnError(errors[0])
        return None
    return broadcast_object(found, d, src=src)


def rescale_position(step: int, n: int, old_batch: int, new_batch: int) -> tuple[int, int]:
    """(step, sample offset) that continue, with global batch ``new_batch``, a run saved at ``step``.

    The position that matters is in samples: epoch ``e = step // steps_per_epoch`` and the first ``offset``
    images of that epoch's seeded permutation have been trained on. When the global batch changes (resuming
    N processes' checkpoint on M, or a new --batch-size) the rest of the epoch is cut into new-size batches
    from that offset, so no image is skipped or seen twice; the step counter is set so that the epoch ends at
    ``(e + 1) * steps_per_epoch(new)``, which keeps the epoch arithmetic and the LR schedule's progress
    (step / total steps) where they were. With an unchanged batch this is the identity.
    """
    old_spe, new_spe = math.ceil(n / old_batch), math.ceil(n / new_batch)
    epoch, i = divmod(step, old_spe)
    offset = min(i * old_batch, n)
    remaining = math.ceil((n - offset) / new_batch)
    return epoch * new_spe + new_spe - remaining, offset


# ---------------------------------------------------------------- stopping
class Stopped(Exception):
    """SIGINT/SIGTERM asked the training loop to stop; raised between two optimizer steps."""


_signal_seen = 0
_previous_handlers: dict[int, Any] = {}


def _on_signal(signum: int, _frame) -> None:
    global _signal_seen
    if _signal_seen:  # the second Ctrl-C/SIGTERM: leave now, with no checkpoint
        raise SystemExit(128 + signum)
    _signal_seen = signum


def install_stop_handlers() -> None:
    """Turn SIGINT/SIGTERM into a stop request that the training loop acts on between steps.

    Why not Python's KeyboardInterrupt: it is raised wherever the code happens to be, so the state saved can be
    half a step (weights or Adam moments updated, step counter not), and under torchrun ranks leave at
    different steps (one blocked in an all-reduce the others never join). SIGTERM's default kills at once.
    """
    global _signal_seen
    _signal_seen = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            _previous_handlers[sig] = signal.signal(sig, _on_signal)
    except ValueError:  # not the main thread: leave the default behaviour
        pass


def restore_stop_handlers() -> None:
    """The handlers from before ``install_stop_handlers`` (a caller such as a test runner keeps its Ctrl-C)."""
    while _previous_handlers:
        sig, handler = _previous_handlers.popitem()
        signal.signal(sig, handler)


def stop_signal() -> int:
    """The signal that asked to stop (0: none yet)."""
    return _signal_seen


def stop_requested(step: int, d: Dist) -> bool:
    """True once SIGINT/SIGTERM arrived; under torchrun on every rank after the same step, once any rank had it."""
    if d.world <= 1:
        return bool(_signal_seen)
    if step % STOP_CHECK_EVERY:
        return False
    flag = torch.tensor([_signal_seen], dtype=torch.int32, device=d.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # one rank's signal stops all, even on other machines
    return bool(flag.item())


# ---------------------------------------------------------------- replicas
def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A short SHA-256 of a state dict's tensors (names, shapes, values in logical order)."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def replica_digests(model: torch.nn.Module, d: Dist) -> list[str]:
    """Each rank's weights digest, in rank order: all equal when the DDP replicas are in step."""
    return gather_object(weights_digest(model.state_dict()), d)
