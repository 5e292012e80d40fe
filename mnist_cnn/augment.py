"""Augmentation for real handwriting: batched tensor ops on the training device, seeded per step.

    PYTHONPATH=. python -c "import torch; from mnist_cnn.augment import augment, step_generator; \
x = torch.zeros(4, 1, 28, 28); x[:, :, 8:20, 12:16] = 1; print(augment(x, step_generator(0, 0, x.device)).shape)"

``augment(x, g)`` takes (B,1,28,28) floats in [0,1] (ink bright) and returns new ones of the same shape. Every
random number comes from ``g``, a generator seeded from (seed, step, rank) by ``step_generator``, so a resumed
run draws exactly what an uninterrupted one draws. No per-image Python loop: each image gets its own
parameters through batched matrices, masks and grouped convolutions. What each transform stands for is in
its comment; the ranges stay where preprocessing (``preprocess.to_mnist``) leaves real input.

The digit stays inside the frame: the affine map is fitted to each image's ink box (``fit_affine``), shrunk
when the transformed box would leave the 28×28 field and shifted back inside it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIDE = 28
MARGIN = 1.0  # px kept free around the transformed ink box (the elastic field moves ink by about 1 px)
FILL_P = 0.15  # share of digits stretched to fill their box (fill_box)


def step_generator(seed: int, step: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """A generator on ``device`` seeded from (seed, step, rank): the draws depend on nothing else."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) * 1_009 + rank + 0x5EED)
    return g


def uniform(g: torch.Generator, shape, lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device) * (hi - lo) + lo


def chance(g: torch.Generator, n: int, p: float, device) -> torch.Tensor:
    """(n,1,1,1) float mask: 1 with probability p."""
    return (torch.rand((n, 1, 1, 1), generator=g, device=device) < p).float()


def ink_box(x: torch.Tensor, level: float = 0.2) -> torch.Tensor:
    """(B,1,H,W) → (B,4) float pixel bounds (x0, y0, x1, y1) of the ink above ``level``; the centre if none."""
    ink = x[:, 0] > level
    cols, rows = ink.any(1), ink.any(2)  # (B,W), (B,H)
    idx_w = torch.arange(x.shape[-1], device=x.device)
    idx_h = torch.arange(x.shape[-2], device=x.device)
    big = 10_000
    x0 = torch.where(cols, idx_w, big).amin(1)
    x1 = torch.where(cols, idx_w, -1).amax(1)
    y0 = torch.where(rows, idx_h, big).amin(1)
    y1 = torch.where(rows, idx_h, -1).amax(1)
    box = torch.stack([x0, y0, x1, y1], 1).float()
    empty = x1 < 0
    box[empty] = torch.tensor([13.0, 13.0, 14.0, 14.0], device=x.device)
    return box


def fit_affine(a: torch.Tensor, t: torch.Tensor, box: torch.Tensor, side: int = SIDE,
               margin: float = MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink the linear part ``a`` (B,2,2) and clamp the shift ``t`` (B,2) so that the ink ``box`` (B,4),
    mapped by p' = a (p - c) + c + t about the frame's centre c, stays inside [margin, side-1-margin]²."""
    c = (side - 1) / 2
    corners = torch.stack([box[:, [0, 1]], box[:, [2, 1]], box[:, [0, 3]], box[:, [2, 3]]], 1) - c  # (B,4,2)
    moved = corners @ a.transpose(1, 2)  # (B,4,2) about the centre, before the shift
    lo, hi = moved.amin(1), moved.amax(1)  # (B,2)
    room = side - 1 - 2 * margin
    k = (room / (hi - lo).clamp(min=1e-6)).amin(1).clamp(max=1.0)  # (B,) one factor for both axes
    a = a * k[:, None, None]
    lo, hi = lo * k[:, None], hi * k[:, None]
    t = torch.minimum(torch.maximum(t, margin - c - lo), c - margin - hi)
    return a, t


def warp(x: torch.Tensor, a: torch.Tensor, t: torch.Tensor, flow: torch.Tensor | None = None) -> torch.Tensor:
    """Resample x so that input point p lands at a (p - c) + c + t (bilinear); ``flow`` (B,H,W,2) adds a
    displacement in normalised units to where each output pixel samples."""
    n, _, h, w = x.shape
    inv = torch.linalg.inv(a)  # grid_sample asks, for each output pixel, where to read the input
    theta = torch.cat([inv, -(inv @ (t / torch.tensor([w / 2, h / 2], device=x.device))[..., None])], 2)
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    if flow is not None:
        grid = grid + flow
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(g: torch.Generator, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,2,2) linear parts and (B,2) shifts in px, in (x, y) order."""
    angle = uniform(g, n, -math.radians(15), math.radians(15), device)  # a slanted page or a tilted hand
    shear = uniform(g, n, -0.3, 0.3, device)  # italic writing leans its verticals
    # One factor per axis: preprocessing fits the longer side to 20 px, so the other side's length is the
    # writer's (narrow 0s, wide 4s) or the scanner's (forms stretched to fill a box).
    sx = torch.exp(uniform(g, n, math.log(0.7), math.log(1.2), device))
    sy = torch.exp(uniform(g, n, math.log(0.8), math.log(1.15), device))
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shr = torch.zeros(n, 2, 2, device=device)
    shr[:, 0, 0] = shr[:, 1, 1] = 1
    shr[:, 0, 1] = shear
    scale = torch.diag_embed(torch.stack([sx, sy], 1))
    t = uniform(g, (n, 2), -2.0, 2.0, device)  # a centre of mass off by a pixel or two (hand-cropped input)
    return rot @ shr @ scale, t


def elastic_flow(g: torch.Generator, n: int, device, px: float = 1.0, knots: int = 4) -> torch.Tensor:
    """(B,H,W,2) smooth random displacement, about ``px`` pixels: the wobble of a hand (Simard et al. 2003)."""
    coarse = torch.randn((n, 2, knots, knots), generator=g, device=device) * (px * 2 / SIDE)
    return F.interpolate(coarse, size=(SIDE, SIDE), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)


def fill_box(box: torch.Tensor, g: torch.Generator, p: float = FILL_P) -> torch.Tensor:
    """(B,2,2) per-axis stretch of the ink ``box`` towards a square, for a share ``p`` of the images: forms and
    datasets scanned into a fixed box without keeping the aspect ratio (Semeion, USPS) make a narrow 1 a wide
    slanted bar and a 0 a circle. The shorter side grows by (longer / shorter) ** u, u in [0.5, 1], at most 4×."""
    n, dev = len(box), box.device
    size = (box[:, 2:] - box[:, :2] + 1).clamp(min=1.0)  # (B,2) width, height
    u = uniform(g, (n, 1), 0.5, 1.0, dev) * chance(g, n, p, dev).view(n, 1)
    factor = (size.amax(1, keepdim=True) / size).clamp(max=4.0) ** u
    return torch.diag_embed(factor)


def geometry(x: torch.Tensor, g: torch.Generator, elastic_p: float = 0.5) -> torch.Tensor:
    n = len(x)
    box = ink_box(x)
    a, t = random_affine(g, n, x.device)
    a, t = fit_affine(a @ fill_box(box, g), t, box)
    flow = elastic_flow(g, n, x.device) * chance(g, n, elastic_p, x.device).view(n, 1, 1, 1)
    return warp(x, a, t, flow)


def stroke(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Thicker (a marker, a felt pen) or thinner (a fine liner) strokes, by a partial dilation or erosion."""
    n, dev = len(x), x.device
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 3, 1, 1)
    w_thick = chance(g, n, 0.25, dev) * uniform(g, (n, 1, 1, 1), 0.2, 1.0, dev)
    w_thin = chance(g, n, 0.15, dev) * (1 - w_thick.sign()) * uniform(g, (n, 1, 1, 1), 0.2, 0.6, dev)
    return x + w_thick * (thick - x) + w_thin * (thin - x)


def low_resolution(x: torch.Tensor, g: torch.Generator, p: float = 0.15) -> torch.Tensor:
    """Down to 8-16 px and back: thumbnails, small canvas drawings, forms scanned at low resolution."""
    n, dev = len(x), x.device
    side = int(torch.randint(8, 17, (1,), generator=g, device=dev).item())
    small = F.interpolate(x, size=(side, side), mode="area")
    back = F.interpolate(small, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    m = chance(g, n, p, dev)
    return x + m * (back - x)


def blur(x: torch.Tensor, g: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """A Gaussian blur of 0.3-1.2 px: an out-of-focus photo, a soft pencil. One kernel per image (grouped conv)."""
    n, dev = len(x), x.device
    sigma = uniform(g, n, 0.3, 1.2, dev)
    r = torch.arange(-2, 3, device=dev, dtype=x.dtype)
    k1 = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)  # (B,5)
    k2 = (k1[:, :, None] * k1[:, None, :])[:, None]  # (B,1,5,5)
    out = F.conv2d(x.reshape(1, n, SIDE, SIDE), k2, padding=2, groups=n).reshape(n, 1, SIDE, SIDE)
    m = chance(g, n, p, dev)
    return x + m * (out - x)


def tone(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Ink intensity: faint pencil (weaker ink, gamma) or a thresholded black-and-white scan."""
    n, dev = len(x), x.device
    gain = 1 - chance(g, n, 0.3, dev) * uniform(g, (n, 1, 1, 1), 0.0, 0.5, dev)
    gamma = torch.exp(chance(g, n, 0.3, dev) * uniform(g, (n, 1, 1, 1), -0.4, 0.4, dev))
    out = x.clamp(0, 1).pow(gamma) * gain
    binary = chance(g, n, 0.1, dev)  # relative to the image's peak, so a blurred or faint digit survives it
    return out + binary * ((x > 0.5 * x.amax((2, 3), keepdim=True)).to(x.dtype) - out)


def noise(x: torch.Tensor, g: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """Pixel noise up to 0.1: sensor grain and paper texture that preprocessing's threshold leaves behind."""
    n, dev = len(x), x.device
    std = chance(g, n, p, dev) * uniform(g, (n, 1, 1, 1), 0.0, 0.1, dev)
    return (x + std * torch.randn(x.shape, generator=g, device=dev)).clamp(0, 1)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(B,1,28,28) in [0,1], ink bright → the same digits as other writers, pens and cameras make them."""
    x = geometry(x.float(), g)
    x = stroke(x, g)
    x = low_resolution(x, g)
    x = blur(x, g)
    x = tone(x, g)
    return noise(x, g)
