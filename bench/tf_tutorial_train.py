"""The TensorFlow 2 tutorial's train.py, as bench_train.py's reference: run by the Python of a venv that has
TensorFlow (``make bench-tf`` makes .venv-tf); prints its per-epoch times and test accuracy as one JSON line.

The tutorial's model, optimizer, loss, batch (32), 5 epochs and cp-{epoch:04d} weight checkpoints, unchanged.
One difference: the images come from the bundled IDX files (mnist_cnn.data, numpy only) instead of
``keras.datasets.mnist.load_data()``, which downloads them; they are the same 60,000 + 10,000 images.
Run: .venv-tf/bin/python bench/tf_tutorial_train.py [--epochs 5] [--seed 0]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tensorflow as tf  # noqa: E402
from tensorflow.keras import layers, models  # noqa: E402

from mnist_cnn.data import load_mnist  # noqa: E402


class EpochTimes(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.t]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    tf.keras.utils.set_random_seed(args.seed)
    (train_images, train_labels), (test_images, test_labels) = load_mnist("train"), load_mnist("test")
    train_images = train_images.reshape((60000, 28, 28, 1)) / 255.0
    test_images = test_images.reshape((10000, 28, 28, 1)) / 255.0

    model = models.Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax"),
    ])
    model.summary(print_fn=lambda line, **_: print(line, file=sys.stderr))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = EpochTimes()
    with tempfile.TemporaryDirectory() as ckpt_dir:
        save = tf.keras.callbacks.ModelCheckpoint(os.path.join(ckpt_dir, "cp-{epoch:04d}.weights.h5"),
                                                  save_weights_only=True, save_freq=500)
        model.fit(train_images, train_labels, epochs=args.epochs, batch_size=32, callbacks=[save, times],
                  verbose=2)
    _, test_acc = model.evaluate(test_images, test_labels, verbose=0)
    print(json.dumps({"epochs": [{"seconds": s} for s in times.seconds], "test_acc": float(test_acc)}))


if __name__ == "__main__":
    main()
