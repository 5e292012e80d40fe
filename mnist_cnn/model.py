"""The tutorial's CNN and stronger presets. Imports only torch; no I/O.

The model returns logits; softmax belongs at the edges (predict, serve, ONNX consumers).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class TutorialCNN(nn.Module):
    """Exactly the TensorFlow 2 tutorial's network: 93,322 parameters.

    Conv2D(32,3x3,relu) → MaxPool(2) → Conv2D(64,3x3,relu) → MaxPool(2) → Conv2D(64,3x3,relu)
    → Flatten(576) → Dense(64,relu) → Dense(10). Keras pads 'valid', as here.
    """

    def __init__(self, width: int = 1):
        super().__init__()
        c1, c2 = 32 * width, 64 * width
        self.conv1 = nn.Conv2d(1, c1, 3)  # (B,1,28,28) → (B,32,26,26)
        self.pool1 = nn.MaxPool2d(2)  # → (B,32,13,13)
        self.conv2 = nn.Conv2d(c1, c2, 3)  # → (B,64,11,11)
        self.pool2 = nn.MaxPool2d(2)  # → (B,64,5,5)
        self.conv3 = nn.Conv2d(c2, c2, 3)  # → (B,64,3,3)
        self.flatten = nn.Flatten()  # → (B,576), channels-first order
        self.fc1 = nn.Linear(c2 * 9, 64)  # → (B,64)
        self.fc2 = nn.Linear(64, 10)  # → (B,10) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # max-pooling before the ReLU is the same function (ReLU is monotonic, so it commutes with max) and the
        # same gradients, with the ReLU and its backward on a quarter of the values
        x = torch.relu(self.pool1(self.conv1(x)))
        x = torch.relu(self.pool2(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)


class StrongCNN(nn.Sequential):
    """The accuracy preset: six 3×3 convolutions with BatchNorm in three stages, dropout before the classifier.

    Padded convolutions keep the 28×28 field in the first two stages, so strokes near the border count as much
    as those in the middle; the last two convolutions are unpadded (7→5→3). Logits out, like every model here.
    """

    def __init__(self, dropout: float = 0.3):
        layers: list[tuple[str, nn.Module]] = []
        shapes = [(1, 32, 1), (32, 32, 1), "pool", (32, 64, 1), (64, 64, 1), "pool", (64, 128, 0), (128, 128, 0)]
        n = 0
        for spec in shapes:
            if spec == "pool":
                layers.append((f"pool{n // 2}", nn.MaxPool2d(2)))  # 28 → 14, 14 → 7
                continue
            c_in, c_out, pad = spec
            n += 1
            layers += [(f"conv{n}", nn.Conv2d(c_in, c_out, 3, padding=pad, bias=False)),
                       (f"bn{n}", nn.BatchNorm2d(c_out)), (f"relu{n}", nn.ReLU(inplace=True))]
        layers += [("flatten", nn.Flatten()), ("dropout", nn.Dropout(dropout)),  # (B,128·3·3)
                   ("fc", nn.Linear(128 * 9, 10))]  # (B,10) logits
        super().__init__(OrderedDict(layers))


MODELS = {
    "tutorial": lambda: TutorialCNN(),
    "wide": lambda: TutorialCNN(width=2),
    "strong": lambda: StrongCNN(),
}


def build_model(name: str = "tutorial") -> nn.Module:
    """Build a model from the registry by name; raises KeyError with the known names."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> str:
    """A Keras-style table of layers, output shapes and parameter counts."""
    rows: list[tuple[str, str, int]] = []
    hooks = []
    for name, module in model.named_children():
        def hook(mod, _inp, out, name=name):
            shape = "(None, " + ", ".join(str(d) for d in out.shape[1:]) + ")"
            rows.append((f"{name} ({type(mod).__name__})", shape, sum(p.numel() for p in mod.parameters())))
        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(input_shape))
    for h in hooks:
        h.remove()
    total = count_parameters(model)
    width = max(len(r[0]) for r in rows) + 2
    line = "-" * (width + 36)
    out = [f"{'Layer (type)':<{width}}{'Output Shape':<22}{'Param #':>14}", line]
    out += [f"{n:<{width}}{s:<22}{p:>14,}" for n, s, p in rows]
    out += [line, f"Total params: {total:,}", f"Trainable params: {sum(p.numel() for p in model.parameters() if p.requires_grad):,}"]
    return "\n".join(out)
