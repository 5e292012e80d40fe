"""Training: ``mnist-cnn train`` (one process) or ``torchrun --nproc-per-node N -m mnist_cnn train`` (DDP).

The dataset is small (47 MB as uint8), so it lives as one tensor on the training device and batches are
sliced by index from a seeded permutation per epoch: no DataLoader, no workers. Resuming restores the
model, the optimizer, the step and the position inside the epoch, so a resumed run ends with the same
weights as one never stopped.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnist_cnn import MnistCnnError
from mnist_cnn import distributed as D
from mnist_cnn import recipe
from mnist_cnn.checkpoint import remove_stale_temps
from mnist_cnn.config import TrainConfig
from mnist_cnn.data import load_digits
from mnist_cnn.model import count_parameters
from mnist_cnn.run import Run
from mnist_cnn.runfolder import lock_run_folder


@dataclass
class Dataset:
    images: torch.Tensor  # (N,28,28) uint8 on the training device
    labels: torch.Tensor  # (N,) int64 on the training device

    def __len__(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------- set-up
def tune_malloc(on: bool = True) -> None:
    """on: keep freed memory in glibc's heap (per-step alloc/free of activations otherwise costs page faults).
    off: glibc's defaults again, and the kept memory handed back to the OS (peak RSS is a target too)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30 if on else 128 << 10)  # M_TRIM_THRESHOLD: 1 GiB, or the default 128 KiB
        libc.mallopt(-4, 0 if on else 1 << 16)  # M_MMAP_MAX: 0 = no mmap'd blocks that are unmapped on free
        if not on:
            libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def to_input(images_u8: torch.Tensor) -> torch.Tensor:
    """(B,28,28) uint8 → (B,1,28,28) float in [0,1], channels_last (as the tutorial scales pixels)."""
    x = images_u8.unsqueeze(1).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last)


def load_split(cfg: TrainConfig, split: str, device: torch.device, limit: int = 0) -> Dataset:
    parts = [load_digits(cfg.data or None, split, limit)]
    if split == "train" and cfg.data and cfg.mix_mnist:  # fine-tuning on your digits with some MNIST mixed in
        parts.append(load_digits(None, "train", cfg.mix_mnist))
    images = torch.cat([torch.from_numpy(x.copy()) for x, _ in parts])
    labels = torch.cat([torch.from_numpy(y) for _, y in parts])
    return Dataset(images.to(device), labels.to(device))


def split_holdout(data: Dataset, n: int) -> tuple[Dataset, Dataset]:
    """(train, held-out): the last ``n`` images (at most a tenth) are kept aside for calibration."""
    n = min(n, len(data) // 10)
    cut = len(data) - n
    return (Dataset(data.images[:cut], data.labels[:cut]), Dataset(data.images[cut:], data.labels[cut:]))


# ---------------------------------------------------------------- schedule and order
def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """OneCycle: linear warm-up over the first 20 % of steps, then cosine down to 1/100 of the start."""
    if cfg.schedule == "constant":
        return cfg.lr
    warm = max(1, int(0.2 * total))
    if step < warm:
        return cfg.lr * (0.04 + 0.96 * step / warm)
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (0.0004 + 0.9996 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The seeded permutation of epoch ``epoch``: the same on every rank and after every resume."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


# ---------------------------------------------------------------- steps
def train_step(run: Run, model, images, labels, global_count: int) -> tuple:
    """One optimizer step on this rank's share of a global batch.

    The digits' loss is the sum over local images divided by the global batch size, times the world size, so
    that DDP's gradient average equals the mean over the whole global batch even when shards differ in size.
    Non-digits (``--outliers``) add the cross-entropy to the uniform distribution, averaged.
    """
    cfg, world = run.cfg, run.dist.world
    x = recipe.training_input(cfg, to_input(images), run.step, run.dist.rank)
    with autocast(run.device, run.bf16):
        logits = model(x).float()
    digits, others = logits[:len(labels)], logits[len(labels):]
    loss_sum = F.cross_entropy(digits, labels, reduction="sum", label_smoothing=cfg.label_smoothing)
    loss = loss_sum * (world / global_count)
    if len(others):
        loss = loss + recipe.outlier_loss(others)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if run.ema is not None:
        run.ema.update_parameters(run.raw_model)
    correct = (digits.argmax(1) == labels).sum()
    return loss_sum.detach(), correct


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: Dataset, d: D.Dist = D.Dist(), bf16: bool = False,
                      batch: int = 128) -> tuple[float, float]:
    """(mean loss, accuracy) on ``data``; each rank takes every world-th image, results are summed."""
    model.eval()
    device = data.images.device
    idx = torch.arange(d.rank, len(data), d.world, device=device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for part in idx.split(batch):
        with autocast(device, bf16):
            logits = model(to_input(data.images[part]))
        y = data.labels[part]
        totals[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        totals[1] += (logits.argmax(1) == y).sum()
    D.all_reduce_sum(totals, d)
    model.train()
    return (totals[0] / len(data)).item(), (totals[1] / len(data)).item()


@torch.no_grad()
def fit_run_temperature(model: nn.Module, held_out: Dataset, bf16: bool) -> tuple[float, float, float | None]:
    """(temperature, held-out accuracy, reject_energy): temperature scaling and the "not a digit" energy line
    (calibrate.fit_energy_threshold), both on images the run never trained on."""
    from mnist_cnn.calibrate import fit_energy_threshold, fit_temperature

    if len(held_out) == 0:
        return 1.0, float("nan"), None
    model.eval()
    with autocast(held_out.images.device, bf16):
        # 128 at a time: conv1's output alone is 87 KB per image, and peak RSS is what the memory target counts
        logits = torch.cat([model(to_input(part)).float() for part in held_out.images.split(128)])
    model.train()
    labels = held_out.labels
    acc = (logits.argmax(1) == labels).float().mean().item()
    logits = logits.cpu().numpy()
    temperature = fit_temperature(logits, labels.cpu().numpy())
    return temperature, acc, fit_energy_threshold(logits, temperature)


# ---------------------------------------------------------------- the loop
def _batches_of_epoch(run: Run, n: int, epoch: int, steps_per_epoch: int, global_batch: int):
    """Yield (step_in_epoch, this rank's indices) from the current position to the epoch's end."""
    order = epoch_order(n, run.cfg.seed, epoch, run.device)
    start = run.step - epoch * steps_per_epoch
    offset = start * global_batch if run.first_offset is None else run.first_offset  # see rescale_position
    run.first_offset = None
    for i in range(start, steps_per_epoch):
        lo = offset + (i - start) * global_batch
        idx = order[lo:lo + global_batch]
        yield i, idx.tensor_split(run.dist.world)[run.dist.rank], len(idx)


def train_one_epoch(run: Run, model: nn.Module, data: Dataset, epoch: int, steps_per_epoch: int,
                    total_steps: int) -> tuple[float, float]:
    """Run the rest of ``epoch``; returns (mean train loss, train accuracy) over the steps run."""
    cfg, d = run.cfg, run.dist
    global_batch = cfg.batch_size * d.world
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss sum, correct, count
    bar = tqdm(total=steps_per_epoch, initial=run.step - epoch * steps_per_epoch, disable=not d.main,
               desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", dynamic_ncols=True, leave=False,
               mininterval=0.5)
    for i, idx, count in _batches_of_epoch(run, len(data), epoch, steps_per_epoch, global_batch):
        if D.stop_requested(run.step, d):  # Ctrl-C/SIGTERM: stop between two steps (all ranks after the same one)
            raise D.Stopped
        for group in run.opt.param_groups:
            group["lr"] = lr_at(run.step, total_steps, cfg)
        loss, correct = train_step(run, model, data.images[idx], data.labels[idx], count)
        sums[0] += loss
        sums[1] += correct
        sums[2] += len(idx)
        run.step += 1
        bar.update(1)
        if i % 20 == 0 and d.main:  # a host sync every 20 steps, not every step
            bar.set_postfix_str(f"loss {sums[0].item() / sums[2].item():6.4f}  acc {sums[1].item() / sums[2].item():6.4f}")
        if cfg.save_every and run.step % cfg.save_every == 0 and i + 1 < steps_per_epoch:
            run.save()
    bar.close()
    D.all_reduce_sum(sums, d)
    n = max(sums[2].item(), 1.0)
    return sums[0].item() / n, sums[1].item() / n


def train(cfg: TrainConfig) -> dict:
    """Train as configured; returns the final metrics. Prints progress on global rank 0 only."""
    run = Run(cfg)
    lock = lock_run_folder(run.dir) if run.dist.main else None  # held until this process ends
    D.install_stop_handlers()
    try:
        if lock is not None:
            for folder in (run.dir, run.ckpts.folder):
                remove_stale_temps(folder)
        return _train(run)
    finally:
        D.restore_stop_handlers()
        D.teardown()
        if lock is not None:
            os.close(lock)


def _train(run: Run) -> dict:
    cfg, d = run.cfg, run.dist
    t0 = time.perf_counter()
    train_data, held_out = split_holdout(load_split(cfg, "train", run.device, cfg.limit), cfg.holdout)
    test_data = load_split(cfg, "test", run.device)
    tune_malloc()  # only now: the loading's temporaries (~140 MB) go back to the OS instead of into the heap
    run.resume()
    run.write_config()
    model = run.raw_model
    if d.world > 1:  # wrap after loading the checkpoint; save run.raw_model, never the wrapper
        model = nn.parallel.DistributedDataParallel(model, device_ids=[run.device] if run.device.type == "cuda" else None)
    global_batch = cfg.batch_size * d.world
    steps_per_epoch = math.ceil(len(train_data) / global_batch)
    total_steps = steps_per_epoch * cfg.epochs
    if run.saved_batch and run.saved_batch != global_batch:  # resumed on another world size or --batch-size
        _continue_with_new_batch(run, len(train_data), global_batch, steps_per_epoch, total_steps)
    run.log(f"training {cfg.model} ({count_parameters(run.raw_model):,} parameters) on {len(train_data):,} "
            f"images, {cfg.epochs} epochs of {steps_per_epoch} steps, batch {global_batch}"
            f"{f' ({d.world} processes)' if d.world > 1 else ''}, {run.device}, {run.precision_why}"
            f"{recipe.note(cfg)}")
    test_acc = _run_epochs(run, model, train_data, test_data, held_out, steps_per_epoch, total_steps)
    if d.world > 1:  # DDP keeps replicas equal by construction; prove it at the cost of one tiny gather
        digests = D.replica_digests(run.raw_model, d)
        run.log(f"replica check: weights sha256 by rank {' '.join(f'{r}:{h}' for r, h in enumerate(digests))}"
                f" {'identical' if len(set(digests)) == 1 else 'DIFFER'}")
    n_test, n_held = len(test_data), len(held_out)
    del train_data, held_out, test_data  # 56 MB that the export's imports and parity check can have instead
    tune_malloc(False)  # training is over: the heap it kept goes back before the export imports ONNX Runtime
    if d.main and cfg.export_onnx:
        _export_best(run)
    if d.main:
        print(f"test accuracy: {test_acc:.4f} ({n_test} images)")
        if run.best_acc != test_acc:
            run.log(f"best.pt (chosen on {n_held} held-out images) has test accuracy {run.best_acc:.4f}")
        run.log(f"run folder: {run.dir}  ({time.perf_counter() - t0:.1f}s)")
    # Every rank waits here for rank 0's export and output, so that they tear the process group down
    # together: gloo's threads can still hold a peer's last message otherwise, and aborting them kills the
    # process (SIGABRT, "terminate called without an active exception").
    D.barrier(d)
    return {"test_acc": test_acc, "best_acc": run.best_acc, "step": run.step, "run_dir": str(run.dir)}


def _run_epochs(run: Run, model: nn.Module, train_data: Dataset, test_data: Dataset, held_out: Dataset,
                steps_per_epoch: int, total_steps: int) -> float:
    """The epochs still to train; returns the last test accuracy. A stop request (Ctrl-C, SIGTERM) saves
    last.pt and ends as MnistCnnError on rank 0 (SystemExit on the others)."""
    test_acc = run.history[-1]["test_acc"] if run.history else float("nan")
    try:
        for epoch in range(run.step // steps_per_epoch, run.cfg.epochs):
            t_epoch = time.perf_counter()
            loss, acc = train_one_epoch(run, model, train_data, epoch, steps_per_epoch, total_steps)
            test_acc = _end_epoch(run, epoch, loss, acc, test_data, held_out, total_steps, t_epoch)
    except D.Stopped:
        run.save()
        if not run.dist.main:
            raise SystemExit(2) from None  # rank 0 reports it, once
        by = f" ({signal.Signals(D.stop_signal()).name})" if D.stop_signal() else ""
        raise MnistCnnError(f"interrupted at step {run.step}{by}: saved {run.ckpts.folder / 'last.pt'}; run the same "
                            f"command again (--resume auto) to continue") from None
    return test_acc


def _continue_with_new_batch(run: Run, n: int, global_batch: int, steps_per_epoch: int, total_steps: int) -> None:
    """Resumed with another global batch: continue at the same image of the epoch's order."""
    saved_step = run.step
    run.step, run.first_offset = D.rescale_position(run.step, n, run.saved_batch, global_batch)
    run.log(f"global batch {run.saved_batch} -> {global_batch}: continuing epoch "
            f"{run.step // steps_per_epoch + 1} at image {run.first_offset} of its order (step {saved_step} "
            f"-> {run.step} of {total_steps})")


def _end_epoch(run: Run, epoch: int, loss: float, acc: float, test_data: Dataset, held_out: Dataset,
               total_steps: int, t_epoch: float) -> float:
    """Evaluate, calibrate, record a metrics row, save (best.pt when better); returns the test accuracy."""
    model = run.eval_model
    test_loss, test_acc = evaluate_accuracy(model, test_data, run.dist, run.bf16)
    run.temperature, val_acc, run.reject_energy = fit_run_temperature(model, held_out, run.bf16)
    seconds = time.perf_counter() - t_epoch
    run.history.append({"epoch": epoch + 1, "step": run.step, "train_loss": round(loss, 5),
                        "train_acc": round(acc, 5), "test_loss": round(test_loss, 5),
                        "test_acc": round(test_acc, 5), "val_acc": round(val_acc, 5),
                        "temperature": round(run.temperature, 4), "lr": lr_at(run.step - 1, total_steps, run.cfg),
                        "seconds": round(seconds, 2)})
    best = recipe.is_best(val_acc, run.best_val, len(held_out))
    run.best_val = max(run.best_val, val_acc) if len(held_out) else run.best_val
    if best:
        run.best_acc = test_acc
    run.save(best=best)
    run.write_metrics()
    run.log(f"epoch {epoch + 1}/{run.cfg.epochs}  loss {loss:.4f}  acc {acc:.4f}  test_loss {test_loss:.4f}"
            f"  val_acc {val_acc:.4f}  test_acc {test_acc:.4f}  {seconds:5.1f}s{'  (best)' if best else ''}")
    return test_acc


def _export_best(run: Run) -> None:
    """Write model.onnx from best.pt so predictions can skip importing torch (see export.py)."""
    best = run.ckpts.folder / "best.pt"
    if not best.is_file():
        return
    try:
        from mnist_cnn.export import export_onnx
    except ImportError:
        return
    export_onnx(best, run.dir / "model.onnx")
