"""The robust recipe (augmentation, outliers, label smoothing, EMA) and the strong preset, in real small runs."""

import numpy as np
import torch

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.data import load_mnist
from mnist_cnn.model import build_model
from mnist_cnn.engine import OnnxEngine
from mnist_cnn.recipe import is_best
from mnist_cnn.train import train
from test_train import train_process, wait_for_checkpoint

RECIPE = ["--augment", "--outliers", "0.125", "--label-smoothing", "0.05", "--ema", "0.99"]


def test_strong_preset_learns_saves_reloads_and_exports(tmp_path):
    run = tmp_path / "strong"
    train(TrainConfig(model="strong", limit=2400, epochs=2, batch_size=64, lr=3e-3, augment=True, outliers=0.125,
                      label_smoothing=0.05, ema=0.99, run_dir=str(run), resume="never", save_every=0))
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    first, last = ckpt["history"][0], ckpt["history"][-1]
    assert last["train_loss"] < first["train_loss"] and last["test_acc"] > 0.8
    model = build_model("strong")
    model.load_state_dict(ckpt["model"])  # the averaged weights, reloaded into a fresh preset
    x, _ = load_mnist("test", 64)
    x = x.astype(np.float32) / 255
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)[:, None]).numpy()
    got = OnnxEngine(run / "model.onnx").logits(x)  # exported at the end of training, parity-checked there
    assert np.abs(got - ref).max() < 1e-4


def test_resume_with_the_full_recipe_equals_uninterrupted(tmp_path):
    straight = train_process(tmp_path / "straight", *RECIPE)
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    victim = train_process(tmp_path / "resumed", *RECIPE)
    wait_for_checkpoint(tmp_path / "resumed" / "checkpoints", 40, victim)
    victim.kill()
    victim.wait()
    resumed = train_process(tmp_path / "resumed", *RECIPE)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for key in ("model", "train_model"):  # the moving average and the weights being trained
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


def test_best_checkpoint_is_chosen_without_the_test_set(tmp_path):
    """Two runs that differ only in their test labels choose the same best.pt.

    The second test set's labels are all wrong (true + 1), so its accuracy falls as the model learns: chosen
    on test accuracy, best.pt would be the first epoch in one run and the last in the other.
    """
    x_train, y_train = load_mnist("train", 3000)
    x_test, y_test = load_mnist("test", 500)
    runs = {}
    for name, labels in (("true", y_test), ("wrong", (y_test + 1) % 10)):
        data = tmp_path / f"{name}.npz"
        np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=labels)
        run = tmp_path / name
        train(TrainConfig(data=str(data), epochs=3, batch_size=64, lr=3e-3, run_dir=str(run), resume="never",
                          save_every=0, export_onnx=False))
        runs[name] = load_checkpoint(run / "checkpoints" / "best.pt")
    a, b = runs["true"], runs["wrong"]
    assert [h["test_acc"] for h in a["history"]] != [h["test_acc"] for h in b["history"]]
    assert a["step"] == b["step"] and a["best_val_acc"] == b["best_val_acc"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_best_is_the_newest_within_one_standard_error_of_the_best_held_out_accuracy():
    assert is_best(0.9975, 0.9980, 2000)  # one image fewer of 2,000: noise, the newer weights win
    assert not is_best(0.9960, 0.9980, 2000)  # four fewer: more than one standard error (2 images here)
    assert is_best(0.9990, 0.9980, 2000) and is_best(0.5, -1.0, 2000)
    assert is_best(0.10, 0.99, 0)  # no held-out images: the newest weights
