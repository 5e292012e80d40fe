"""Adam for training: ``torch.optim.Adam(fused=True)``'s update, without torch.optim's import of the compiler.

    PYTHONPATH=. python -c "import torch; from mnist_cnn.optim import Adam; w = torch.nn.Parameter(torch.ones(3)); \
opt = Adam([w], lr=0.1); w.sum().backward(); opt.step(); print(w)"

Every torch.optim optimizer imports torch._dynamo, and sympy with it, when its first parameter group is added:
resident memory that a training run never uses, and a large share of its peak-RSS budget (measured in
bench/RESULTS.md, "Training"). This class calls the kernel that torch.optim.Adam(fused=True) calls,
``torch._fused_adam_``, so its updates are the same to the bit, and its ``state_dict`` has torch.optim.Adam's
layout, so a checkpoint's optimizer state loads in either (both tested in tests/test_train.py).
"""

from __future__ import annotations

import torch


class Adam:
    """Adam (Kingma & Ba, 2015) without weight decay, for parameters on one device (CPU or CUDA)."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0, "amsgrad": False,
                              "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                              "fused": True, "decoupled_weight_decay": False}]  # torch.optim.Adam's keys
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        group = self.param_groups[0]
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_([self.params[i] for i in live], [self.params[i].grad for i in live],
                           [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live], [], steps,
                           lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=0.0,
                           eps=group["eps"], amsgrad=False, maximize=False)

    def state_dict(self) -> dict:
        state = {i: {"step": s, "exp_avg": m, "exp_avg_sq": v}
                 for i, (s, m, v) in enumerate(zip(self.steps, self.exp_avg, self.exp_avg_sq)) if s.item() > 0}
        return {"state": state, "param_groups": [{**self.param_groups[0], "params": list(range(len(self.params)))}]}

    def load_state_dict(self, saved: dict) -> None:
        """Restore from this class's or torch.optim.Adam's state_dict; ValueError when it does not fit."""
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(f"{sum(len(g['params']) for g in groups)} parameters in {len(groups)} groups saved, "
                             f"{len(self.params)} in 1 here")
        self.param_groups[0].update({k: groups[0][k] for k in ("lr", "betas", "eps") if k in groups[0]})
        for i, key in enumerate(groups[0]["params"]):
            entry = saved["state"].get(key)
            if entry is None:
                continue
            if entry["exp_avg"].shape != self.params[i].shape:
                raise ValueError(f"parameter {i}: saved shape {tuple(entry['exp_avg'].shape)}, "
                                 f"here {tuple(self.params[i].shape)}")
            self.exp_avg[i].copy_(entry["exp_avg"])
            self.exp_avg_sq[i].copy_(entry["exp_avg_sq"])
            self.steps[i].fill_(float(entry["step"]))
