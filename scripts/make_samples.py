"""Write samples/: one MNIST test digit per class, as the tutorial's users give them (28×28 PNG, black on
white, RGBA). Run: python scripts/make_samples.py. Never uses the training images."""

from pathlib import Path

import numpy as np
from PIL import Image

from mnist_cnn.data import load_mnist

OUT = Path(__file__).resolve().parent.parent / "samples"

images, labels = load_mnist("test")
OUT.mkdir(exist_ok=True)
for digit in range(10):
    i = int(np.flatnonzero(labels == digit)[1])  # the second of each class in the test set
    black_on_white = 255 - images[i]
    rgba = np.dstack([black_on_white] * 3 + [np.full_like(black_on_white, 255)])
    Image.fromarray(rgba, "RGBA").save(OUT / f"{digit}_mnist_test_{i:04d}.png")
    print(OUT / f"{digit}_mnist_test_{i:04d}.png")
