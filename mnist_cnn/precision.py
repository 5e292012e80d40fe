"""``--precision auto``: time training steps in fp32 and bf16 on this machine, once, and remember the faster.

    PYTHONPATH=. python -c "import torch; from mnist_cnn.precision import choose; \
print(choose(torch.device('cpu'), 'tutorial', 64, 'auto'))"

Whether bf16 autocast pays depends on the chip, not on its flags alone: a CPU with AVX512-BF16 but no AMX can
run this network slower in bf16 than in fp32. So ``auto`` runs a few real steps of the chosen model at the
chosen batch size in each precision, alternating them so a busy machine slows both alike, and keeps bf16 only
when it is clearly faster (``MIN_GAIN``). The verdict is cached per CPU (or GPU), torch version, model, batch
and thread count in ``$XDG_CACHE_HOME/mnist-cnn/precision.json`` (default ``~/.cache``), so the measurement
costs once. A CPU without native bf16 (emulated: always slow) is not measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

MIN_GAIN = 0.95  # bf16 only when a step takes under 95 % of fp32's time
ROUNDS, STEPS = 3, 3  # alternating rounds, timed steps per round and candidate (after one warm-up step each)


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-cnn" / "precision.json"


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), platform.processor())
        flags = next((l for l in lines if l.startswith("flags")), "")
    except OSError:
        model, flags = platform.processor(), ""
    return f"{model} [{hashlib.sha256(flags.encode()).hexdigest()[:8]}]"


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # AVX512-BF16 or AMX; else emulated


def time_steps(model_name: str, batch: int, device: torch.device) -> dict[str, float]:
    """Median seconds per training step of a fresh model, {"fp32": s, "bf16": s}, measured alternately."""
    from mnist_cnn.model import build_model
    from mnist_cnn.optim import Adam

    model = build_model(model_name).to(device, memory_format=torch.channels_last)
    opt = Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def step(bf16: bool) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(ROUNDS):
        for name in times:
            step(name == "bf16")  # warm-up: oneDNN/cuDNN pick their kernels on the first call
            for _ in range(STEPS):
                t0 = time.perf_counter()
                step(name == "bf16")
                times[name].append(time.perf_counter() - t0)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


def choose(device: torch.device, model_name: str, batch: int, precision: str) -> tuple[bool, str]:
    """(use bf16 autocast, why) for ``--precision`` (auto, fp32 or bf16)."""
    if precision != "auto":
        return precision == "bf16", f"{precision} (asked for)"
    if not native_bf16(device):
        return False, "fp32 (no native bf16 on this hardware)"
    key = f"{hardware(device)} | torch {torch.__version__} | {model_name} | batch {batch} | " \
          f"{torch.get_num_threads()} threads"
    path = cache_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = {k: round(v * 1e3, 2) for k, v in time_steps(model_name, batch, device).items()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(known, indent=1) + "\n")
            how = "measured now"
        except OSError:
            how = "measured now, not cached"
    else:
        how = f"measured before, cached in {path}"
    ms = known[key]
    bf16 = ms["bf16"] < MIN_GAIN * ms["fp32"]
    return bf16, f"{'bf16' if bf16 else 'fp32'} (auto: a step takes {ms['bf16']} ms in bf16, {ms['fp32']} ms in " \
                 f"fp32 here; {how})"
