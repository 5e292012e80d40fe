"""Synthetic non-digits for outlier exposure: ``non_digits(n, g, device)`` → (n,1,28,28) in [0,1], ink bright.

    PYTHONPATH=. python -c "import torch; from mnist_cnn.outliers import non_digits; \
print(non_digits(8, torch.Generator().manual_seed(0), torch.device('cpu')).shape)"

Training with ``--outliers F`` adds F × the batch of these to every step with a uniform target (Hendrycks et al.
2019, "Deep anomaly detection with outlier exposure"): the network learns to spread its belief, and so to give
a high energy, on what is not a digit. Four kinds, in MNIST's format (longer side 20 px, centred): tangled
scribbles, filled blobs, letters and symbols from a font, and textures (stripes and checks in a round patch).
They are generated here, never taken from a data set, so Fashion-MNIST stays an honest evaluation. Letters
that are written like digits (O, I, l, S, Z, B, G, b, g, q, …) are left out. The "not a digit" threshold still
comes from held-out digits only (calibrate.py).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from mnist_cnn.augment import SIDE, ink_box, uniform, warp

LETTERS = "ACEFHKMNPRUVWXYacdefhkmnpruvwxy#%&@?*+=<>$€"
BOX = 20.0  # MNIST's box for the longer side


def fit_box(x: torch.Tensor) -> torch.Tensor:
    """Scale each image's ink box so that its longer side is 20 px and move the box to the centre."""
    box = ink_box(x)
    size = (box[:, 2:] - box[:, :2] + 1).amax(1)  # (B,)
    k = BOX / size.clamp(min=1)
    a = torch.diag_embed(torch.stack([k, k], 1))
    centre = (box[:, :2] + box[:, 2:]) / 2 - (SIDE - 1) / 2
    return warp(x, a, -centre * k[:, None]).clamp(0, 1)


def grid_xy(device) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(SIDE, device=device, dtype=torch.float32)
    return r[None, :].expand(SIDE, SIDE), r[:, None].expand(SIDE, SIDE)  # x (columns), y (rows)


def scribbles(n: int, g: torch.Generator, device, points: int = 80) -> torch.Tensor:
    """Random walks that turn often: the tangled lines of a pen tried out or a crossed-out word."""
    heading = uniform(g, (n, 1), 0, 2 * math.pi, device) + torch.cumsum(
        torch.randn((n, points), generator=g, device=device) * 0.9, 1)
    step = uniform(g, (n, 1), 0.8, 1.6, device)
    pts = torch.cumsum(torch.stack([heading.cos(), heading.sin()], 2) * step[..., None], 1) + 13.5  # (n,T,2)
    x, y = grid_xy(device)
    d2 = (x - pts[..., 0, None, None]) ** 2 + (y - pts[..., 1, None, None]) ** 2  # (n,T,28,28)
    width = uniform(g, (n, 1, 1), 0.7, 1.3, device)
    return torch.exp(-d2.amin(1) / (2 * width ** 2))[:, None]


def blobs(n: int, g: torch.Generator, device) -> torch.Tensor:
    """Filled shapes from a smooth random field: a smudge, a thumb print, an object photographed."""
    field = torch.randn((n, 1, 4, 4), generator=g, device=device)
    field = F.interpolate(field, size=(SIDE, SIDE), mode="bicubic", align_corners=True)
    x, y = grid_xy(device)
    field = field - ((x - 13.5) ** 2 + (y - 13.5) ** 2) / 80  # falls off outwards: one compact shape
    level = torch.quantile(field.flatten(1), 0.6, dim=1)[:, None, None, None]
    return torch.sigmoid((field - level) * 8)


def textures(n: int, g: torch.Generator, device) -> torch.Tensor:
    """Stripes or checks inside a disc: fabric, a printed pattern, a barcode."""
    x, y = grid_xy(device)
    angle = uniform(g, (n, 1, 1), 0, math.pi, device)
    freq = uniform(g, (n, 1, 1), 0.15, 0.45, device)
    u = (x - 13.5) * angle.cos() + (y - 13.5) * angle.sin()
    v = -(x - 13.5) * angle.sin() + (y - 13.5) * angle.cos()
    stripes = torch.sin(2 * math.pi * freq * u)
    checks = stripes * torch.sin(2 * math.pi * freq * v)
    pick = (torch.rand((n, 1, 1), generator=g, device=device) < 0.5).float()
    pattern = (pick * stripes + (1 - pick) * checks > 0).float()
    radius = uniform(g, (n, 1, 1), 8, 13, device)
    disc = ((x - 13.5) ** 2 + (y - 13.5) ** 2 <= radius ** 2).float()
    return (pattern * disc)[:, None]


@functools.lru_cache(maxsize=1)
def glyph_bank() -> np.ndarray:
    """(G,28,28) letters and symbols from Pillow's bundled font (regular and bold), through ``to_mnist``."""
    from PIL import Image, ImageDraw, ImageFont

    from mnist_cnn.preprocess import to_mnist

    font = ImageFont.load_default(size=48)
    out = []
    for ch in LETTERS:
        for bold in (0, 2):
            img = Image.new("L", (80, 80), 255)
            ImageDraw.Draw(img).text((40, 40), ch, fill=0, font=font, anchor="mm", stroke_width=bold, stroke_fill=0)
            digits = to_mnist(img, single=True)
            if len(digits):
                out.append(digits[0])
    return np.stack(out).astype(np.float32)


def letters(n: int, g: torch.Generator, device) -> torch.Tensor:
    bank = torch.from_numpy(glyph_bank()).to(device)
    pick = torch.randint(len(bank), (n,), generator=g, device=device)
    return bank[pick][:, None]


KINDS = (scribbles, blobs, letters, textures)


def non_digits(n: int, g: torch.Generator, device) -> torch.Tensor:
    """(n,1,28,28): the four kinds in equal shares, in a seeded order, in MNIST's format."""
    if n <= 0:
        return torch.zeros((0, 1, SIDE, SIDE), device=device)
    each = math.ceil(n / len(KINDS))
    made = torch.cat([fit_box(kind(each, g, device)) for kind in KINDS])
    order = torch.randperm(len(made), generator=g, device=device)[:n]
    return made[order]
