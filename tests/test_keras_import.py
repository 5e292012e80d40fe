"""The Keras round trip: the tutorial's model built and briefly trained in Keras 3 (PyTorch backend, no
TensorFlow), saved in each supported layout, imported with ``mnist-cnn import-keras``, and compared with
Keras's own outputs on real MNIST test images.

Run: ``PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_keras_import.py``
"""

from __future__ import annotations

import json
import os

os.environ["KERAS_BACKEND"] = "torch"  # must precede the first Keras import: Keras 3 on PyTorch, no TensorFlow

import numpy as np
import pytest
import torch

from conftest import SAMPLES
from mnist_cnn import MnistCnnError
from mnist_cnn.cli import main
from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.data import load_mnist
from mnist_cnn.keras_import import convert, import_keras, match_tutorial, read_keras_weights
from mnist_cnn.model import build_model
from mnist_cnn.calibrate import softmax
from mnist_cnn.predict import SHIFTS, STEADY_BELOW, shifted
from mnist_cnn.preprocess import to_mnist

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

TOLERANCE = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras 3.x's numpy-2 copy= notices


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``mnist-cnn ARGS`` in this process (the same main() the console script calls): (status, out, err)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def tutorial_keras(last_activation: str = "softmax"):
    """The tutorial's model, layer for layer; ``last_activation="linear"`` gives its logits."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10, activation=last_activation)])


def keras_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N,28,28) → (N,28,28,1) floats / 255, as the tutorial feeds Keras."""
    return (images.astype(np.float32) / 255.0)[..., None]


@pytest.fixture(scope="module")
def keras_model():
    """Trained for one epoch on 1,500 MNIST images (about 85 % test accuracy): real weights, non-zero biases."""
    keras.utils.set_random_seed(0)
    model = tutorial_keras()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = load_mnist("train", limit=1500)
    model.fit(keras_input(x), y, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test", limit=1000)


def keras_logits(model, images: np.ndarray) -> np.ndarray:
    """Keras's pre-softmax outputs: the same weights in a twin whose last layer is linear."""
    twin = tutorial_keras("linear")
    twin.set_weights(model.get_weights())
    return np.asarray(twin.predict(keras_input(images), verbose=0, batch_size=500))


def our_logits(checkpoint, images: np.ndarray) -> np.ndarray:
    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt["model_name"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(images.copy()).float().div(255).unsqueeze(1)).numpy()


def write_keras2_weights(model, path) -> None:
    """Write what tf.keras 2.x ``model.save_weights("x.h5")`` writes (hdf5_format.save_weights_to_hdf5_group).

    Root attributes ``layer_names`` (bytes, model order), ``backend``, ``keras_version``; one group per layer,
    created in sorted name order, with a ``weight_names`` attribute (``conv2d/kernel:0``, ``conv2d/bias:0``)
    and one dataset per weight at that name, hence the ``conv2d/conv2d/kernel:0`` paths.
    """
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for layer in sorted(model.layers, key=lambda x: x.name):
            group = f.create_group(layer.name)
            values = layer.get_weights()
            names = [f"{layer.name}/{w}:0".encode("utf8") for w in ("kernel", "bias")][: len(values)]
            group.attrs["weight_names"] = names
            for name, value in zip(names, values):
                group.create_dataset(name, data=value)


def assert_logits_match(model, checkpoint, images) -> float:
    ours, theirs = our_logits(checkpoint, images), keras_logits(model, images)
    diff = float(np.abs(ours - theirs).max())
    assert diff < TOLERANCE, f"logits differ by up to {diff:.2e}"
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))
    return diff


def test_keras3_weights_round_trip(keras_model, mnist_test, tmp_path, capsys):
    """ModelCheckpoint's Keras 3 .weights.h5 → import-keras → logits equal Keras's within 1e-4."""
    images, labels = mnist_test
    src = tmp_path / "cp-0001.weights.h5"
    keras_model.save_weights(src)  # a compiled, trained model: the file also holds optimizer variables
    status, stdout, stderr = cli(capsys, "import-keras", str(src))
    assert status == 0, stderr
    out = tmp_path / "cp-0001.pt"  # the default: next to the input, .pt
    assert "Keras 3 .weights.h5" in stdout and str(out) in stdout
    diff = assert_logits_match(keras_model, out, images)
    print(f"Keras 3 .weights.h5: max |logit difference| {diff:.2e} on {len(images)} MNIST test images")
    # the probabilities of the tutorial's own softmax model agree as well
    probs = torch.softmax(torch.from_numpy(our_logits(out, images)), 1).numpy()
    assert np.abs(probs - keras_model.predict(keras_input(images), verbose=0)).max() < 1e-5
    ckpt = load_checkpoint(out)  # weights_only=True load
    assert (ckpt["model_name"], ckpt["step"], ckpt["format_version"]) == ("tutorial", 0, 1)
    accuracy = float(stdout.split("imported weights: ")[1].split()[0])
    assert accuracy == pytest.approx(ckpt["best_acc"], abs=1e-4) and accuracy > 0.7


def test_flatten_reorder_is_what_makes_it_match(keras_model, mnist_test):
    """Without the (h,w,c) → (c,h,w) reorder of Dense(576→64), the logits are far apart: the check has teeth."""
    images, _ = mnist_test
    layers, _ = read_keras_weights_from(keras_model)
    state = convert(match_tutorial(layers, "model"))
    kernel = match_tutorial(layers, "model")["fc1"][0]
    state["fc1.weight"] = np.ascontiguousarray(kernel.T)  # the naive copy, channels-last order kept
    model = build_model("tutorial")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.inference_mode():
        naive = model(torch.from_numpy(images[:200].copy()).float().div(255).unsqueeze(1)).numpy()
    assert np.abs(naive - keras_logits(keras_model, images[:200])).max() > 0.1


def read_keras_weights_from(model):
    """Save ``model`` to a temporary .weights.h5 and read it back with our reader."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.weights.h5")
        model.save_weights(path)
        return read_keras_weights(path)


def test_keras2_h5_round_trip(keras_model, mnist_test, tmp_path):
    """A Keras 2 layout file (checked by Keras's own legacy reader) imports and matches within 1e-4."""
    images, _ = mnist_test
    src = tmp_path / "tutorial.h5"
    write_keras2_weights(keras_model, src)
    fresh = tutorial_keras()
    fresh.load_weights(src)  # Keras reads our file as a Keras 2 HDF5 weights file: the layout is right
    for a, b in zip(fresh.get_weights(), keras_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    done = import_keras(src, tmp_path / "from-keras2.pt", check=False)
    assert done["format"] == "Keras 2 HDF5 weights" and done["parameters"] == 93_322
    diff = assert_logits_match(keras_model, tmp_path / "from-keras2.pt", images)
    print(f"Keras 2 HDF5 weights: max |logit difference| {diff:.2e} on {len(images)} MNIST test images")


@pytest.mark.parametrize("name, fmt", [("whole.h5", "Keras 2 HDF5 weights (whole model)"),
                                       ("whole.keras", "Keras 3 .keras archive")])
def test_whole_model_files(keras_model, mnist_test, tmp_path, name, fmt):
    """model.save("x.h5") (legacy whole model) and model.save("x.keras") import too."""
    src = tmp_path / name
    keras_model.save(src)
    done = import_keras(src, tmp_path / "out.pt", check=False)
    assert done["format"] == fmt
    assert_logits_match(keras_model, tmp_path / "out.pt", mnist_test[0][:300])


def test_predict_with_imported_weights(keras_model, tmp_path, capsys):
    """mnist-cnn predict on the imported checkpoint says what Keras says about the same inputs."""
    src = tmp_path / "cp-0001.weights.h5"
    keras_model.save_weights(src)
    out = tmp_path / "tutorial.pt"
    assert cli(capsys, "import-keras", str(src), "--out", str(out), "--no-check")[0] == 0
    samples = sorted(SAMPLES.glob("*.png"))
    status, stdout, stderr = cli(capsys, "predict", "--checkpoint", str(out), "--engine", "torch", "--json",
                                 *map(str, samples))
    assert status == 0, stderr
    ours = [json.loads(line) for line in stdout.splitlines()]
    inputs = np.concatenate([to_mnist(p) for p in samples])  # what predict feeds the model
    theirs = keras_model.predict(inputs[..., None], verbose=0)
    hesitant = np.flatnonzero(theirs.max(1) < STEADY_BELOW)  # predict averages these over their 1-px shifts
    if hesitant.size:  # log-probabilities are the logits up to a constant, which softmax ignores (temperature 1)
        more = keras_model.predict(shifted(inputs[hesitant])[..., None], verbose=0)
        logs = np.log(np.concatenate([theirs[hesitant], more]).reshape(len(SHIFTS) + 1, hesitant.size, -1))
        theirs[hesitant] = softmax(logs.mean(0))
    assert [o["digits"][0] for o in ours] == [int(d) for d in theirs.argmax(1)]
    np.testing.assert_allclose([o["probabilities"][0] for o in ours], theirs, atol=1e-4)


def test_unrecognised_files_fail_clearly(keras_model, tmp_path, capsys):
    """Not HDF5, HDF5 without Keras weights, another model's weights: one-line errors naming what was expected."""
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    keras.utils.set_random_seed(1)  # the save-and-load tutorial's dense model: the wrong network
    dense = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    dense.save_weights(tmp_path / "dense.weights.h5")
    cases = {junk: "not an HDF5 file: expected a Keras 3 .weights.h5",
             empty: "without Keras weights (no 'layers' group, no 'layer_names' attribute)",
             tmp_path / "dense.weights.h5": "does not hold the tutorial's Conv2D(32,3)",
             tmp_path / "missing.h5": "Keras weights file not found"}
    for path, message in cases.items():
        status, _, stderr = cli(capsys, "import-keras", str(path), "--out", str(tmp_path / "x.pt"))
        assert status == 2, stderr
        assert stderr.startswith("error: ") and message in stderr
        assert len(stderr.strip().splitlines()) == 1  # no traceback
    assert "found: " in cli(capsys, "import-keras", str(tmp_path / "dense.weights.h5"))[2]
    assert not (tmp_path / "x.pt").exists()


def test_wrong_layer_count_is_refused(keras_model, tmp_path):
    """The tutorial's layers plus one more Dense layer: refused, not silently half-imported."""
    layers, fmt = read_keras_weights_from(keras_model)
    extra = layers + [type(layers[0])("dense_extra", [np.zeros((10, 10)), np.zeros(10)])]
    with pytest.raises(MnistCnnError, match="holds 6 layers with weights, not 5"):
        match_tutorial(extra, fmt)


def test_nan_weights_are_refused(keras_model, tmp_path, capsys):
    """A diverged or damaged file: refused at import, not a model that answers "0 (confidence nan)"."""
    path = tmp_path / "nan.h5"
    write_keras2_weights(keras_model, path)
    with h5py.File(path, "r+") as f:
        kernels = []
        f.visititems(lambda name, obj: kernels.append(name) if name.endswith("kernel:0") else None)
        kernel = f[kernels[-1]]
        values = kernel[...]
        values.flat[7] = np.nan
        kernel[...] = values
    status, out, err = cli(capsys, "import-keras", str(path), "--no-check")
    assert status == 2 and "NaN or infinite weights in" in err and "not imported" in err, err
    assert not (tmp_path / "nan.pt").exists()
