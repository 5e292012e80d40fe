"""A training run's state and files: ``Run(cfg)`` holds the model, optimizer, EMA and position, and reads and
writes the run folder (checkpoints, resume, config.json, metrics.csv). train.py drives it through the epochs.

    PYTHONPATH=. python -c "from mnist_cnn.run import Run; from mnist_cnn.config import TrainConfig; \
print(Run(TrainConfig(run_dir='/tmp/r', device='cpu', precision='fp32')).step)"
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from mnist_cnn import MnistCnnError
from mnist_cnn import distributed as D
from mnist_cnn import recipe
from mnist_cnn.checkpoint import CheckpointManager, load_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.model import build_model
from mnist_cnn.optim import Adam
from mnist_cnn.precision import choose as choose_precision
from mnist_cnn.runfolder import check_same_run


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnistCnnError("--device cuda asked for, but PyTorch sees no CUDA GPU here")
    return torch.device(name)


class Run:
    """A training run's state and files: model, optimizer, position, the run folder."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per local process
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(self.device)
        self.dist = D.setup(self.device)
        choice = choose_precision(self.device, cfg.model, cfg.batch_size, cfg.precision) if self.dist.main else None
        self.bf16, self.precision_why = D.broadcast_object(choice, self.dist)  # every rank runs rank 0's choice
        self.dir = Path(cfg.run_dir)
        self.ckpts = CheckpointManager(self.dir / "checkpoints", cfg.keep)
        torch.manual_seed(cfg.seed)
        try:
            self.raw_model = build_model(cfg.model).to(self.device, memory_format=torch.channels_last)
        except KeyError as e:
            raise MnistCnnError(str(e.args[0])) from None
        self.opt = Adam(self.raw_model.parameters(), lr=cfg.lr)
        self.ema = None  # with --ema: the weights' moving average, which is evaluated, saved and exported
        if cfg.ema:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(self.raw_model, multi_avg_fn=recipe.ema_update(cfg.ema), use_buffers=True)
        self.step, self.history, self.temperature = 0, [], 1.0
        self.best_val, self.best_acc = -1.0, 0.0  # the best held-out accuracy seen (is_best), best.pt's test accuracy
        self.reject_energy = None  # "not a digit" above this energy (calibrate.py); None: confidence only
        self.saved_batch, self.first_offset = 0, None  # the checkpoint's global batch; resumed epoch's start

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated, saved as "model" and exported: the moving average when there is one."""
        return self.raw_model if self.ema is None else self.ema.module

    def log(self, msg: str) -> None:
        if self.dist.main:
            tqdm.write(msg, file=sys.stderr)

    # ---- checkpoints
    def state(self) -> dict:
        state = {"model_name": self.cfg.model, "model": self.eval_model.state_dict(),
                 "optimizer": self.opt.state_dict(), "step": self.step, "best_acc": self.best_acc,
                 "best_val_acc": self.best_val, "temperature": self.temperature,
                 "reject_energy": self.reject_energy, "config": self.cfg.to_dict(), "history": self.history,
                 "world_size": self.dist.world, "global_batch": self.cfg.batch_size * self.dist.world}
        if self.ema is not None:  # the weights being trained, to continue exactly
            state.update(train_model=self.raw_model.state_dict(), ema_count=int(self.ema.n_averaged))
        return state

    def save(self, best: bool = False) -> None:
        if self.dist.main:
            self.ckpts.save(self.state(), best=best)
        D.barrier(self.dist)

    def resume(self) -> None:
        """Restore from --resume (auto: the run's latest checkpoint; PATH: that file)."""
        how = self.cfg.resume
        if how == "never":
            return
        find = self.ckpts.latest if how == "auto" else lambda: (Path(how), load_checkpoint(how))
        found = D.agree_on_checkpoint(find, self.dist)  # under torchrun: the newest any rank sees, to all
        if found is None:
            return
        path, ckpt = found
        if ckpt.get("model_name", "tutorial") != self.cfg.model:
            raise MnistCnnError(f"{path} holds model {ckpt.get('model_name')!r}, not {self.cfg.model!r}: "
                                f"pass --model {ckpt.get('model_name')}")
        same_run = how == "auto"  # continue exactly; a PATH from elsewhere (fine-tuning) starts a fresh schedule
        # shapes checked by load_checkpoint
        self.raw_model.load_state_dict(ckpt.get("train_model", ckpt["model"]) if same_run else ckpt["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["model"])
            self.ema.n_averaged.fill_(ckpt.get("ema_count", 0) if same_run else 0)
        if same_run:
            check_same_run(ckpt.get("config", {}), self.cfg.to_dict(), path)
            try:
                self.opt.load_state_dict(ckpt["optimizer"])
            except (KeyError, ValueError, TypeError) as e:
                raise MnistCnnError(f"{path}: its optimizer state does not fit the model ({e})") from None
            self.step, self.best_acc = ckpt["step"], ckpt.get("best_acc", 0.0)
            self.best_val = ckpt.get("best_val_acc", -1.0)
            self.history = list(ckpt.get("history", []))
            self.temperature = ckpt.get("temperature", 1.0)
            self.reject_energy = ckpt.get("reject_energy")
            saved_cfg = ckpt.get("config", {})  # its global batch, to continue at the same sample if ours differs
            self.saved_batch = ckpt.get("global_batch", saved_cfg.get("batch_size", 0) * ckpt.get("world_size", 1))
        self.log(f"resumed from {path} (step {ckpt['step']})")

    # ---- files
    def write_config(self) -> None:
        if self.dist.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            chosen = {"precision_used": "bf16" if self.bf16 else "fp32", "precision_why": self.precision_why}
            (self.dir / "config.json").write_text(json.dumps({**self.cfg.to_dict(), **chosen}, indent=2) + "\n")

    def write_metrics(self) -> None:
        if self.dist.main and self.history:
            with open(self.dir / "metrics.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(self.history[0]))
                w.writeheader()
                w.writerows(self.history)
