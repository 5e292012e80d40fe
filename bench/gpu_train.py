"""Seconds of training to 99.2 % on a GPU: the tutorial CNN with the data on the device, bf16, channels_last,
and (with --compile) torch.compile in max-autotune. Warm-up (compilation, cuDNN autotuning) is timed separately.

Run on a GPU machine: python bench/gpu_train.py   (or python bench/bench_train.py --device cuda)
On a CPU it runs too (--device cpu, for a smoke test), with no claim about speed.
Writes bench/results/train-cuda.json (GPU runs only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from common import machine, table, write_json  # noqa: E402

from mnist_cnn.config import TrainConfig  # noqa: E402
from mnist_cnn.model import build_model  # noqa: E402
from mnist_cnn.train import evaluate_accuracy, load_split, lr_at, split_holdout, to_input  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model, opt, bf16: bool, compile_: bool):
    def step(x_u8: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(x_u8.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(to_input(x_u8)).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return torch.compile(step, mode="max-autotune-no-cudagraphs") if compile_ else step


def setup(cfg: TrainConfig, device: torch.device, compile_: bool):
    """(model, optimizer, step function): built once per seed, so the timed run reuses the warm-up's compiled
    code instead of compiling again for new objects."""
    torch.manual_seed(cfg.seed)
    model = build_model("tutorial").to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(cfg.lr, device=device), fused=True,
                           capturable=device.type == "cuda")
    return model, opt, make_step(model, opt, True, compile_)


def train_once(cfg: TrainConfig, data, model, opt, step, steps: int | None = None) -> tuple[float, int]:
    """Train from the weights ``model`` holds now; returns (seconds, steps run). ``steps`` cuts it short."""
    device = data.images.device
    per_epoch = len(data) // cfg.batch_size  # whole batches only: one shape, one compiled graph
    total = per_epoch * cfg.epochs
    sync(device)
    t0, n = time.perf_counter(), 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data), device=device)
        for i in range(per_epoch):
            if steps is not None and n >= steps:
                break
            opt.param_groups[0]["lr"].fill_(lr_at(n, total, cfg))
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            step(data.images[idx], data.labels[idx])
            n += 1
    sync(device)
    return time.perf_counter() - t0, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile the step (default on; the warm-up row shows its cost)")
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only (smoke tests)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this on a GPU machine, or pass --device cpu for a smoke test")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    rows = []
    for seed in args.seeds:
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, limit=args.limit)
        data, _ = split_holdout(load_split(cfg, "train", device, cfg.limit), cfg.holdout)
        test = load_split(cfg, "test", device)
        model, opt, step = setup(cfg, device, args.compile)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        warm_s, _ = train_once(cfg, data, model, opt, step, steps=20)  # compilation, autotuning
        model.load_state_dict(initial)  # then from the same fresh weights and an empty Adam state
        opt.state.clear()
        train_s, steps = train_once(cfg, data, model, opt, step)
        _, acc = evaluate_accuracy(model, test, bf16=True, batch=2000)
        rows.append({"seed": seed, "warmup_s": round(warm_s, 2), "train_s": round(train_s, 3), "steps": steps,
                     "test_acc": round(acc, 4), "reached_99.2": acc >= 0.992})
        print(rows[-1], file=sys.stderr)
    info = machine()
    print(f"machine: {info.get('gpu', info['cpu'])}, torch {info.get('torch')}; batch {args.batch_size}, "
          f"{args.epochs} epochs, bf16, channels_last, compile {args.compile}")
    print(table(rows, ["seed", "warmup_s", "train_s", "steps", "test_acc", "reached_99.2"]))
    if args.device == "cuda":  # a CPU run is a smoke test of this script, not a result
        print(f"wrote {write_json('train-cuda', {'runs': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
