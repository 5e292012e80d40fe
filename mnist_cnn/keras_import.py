"""The tutorial's Keras weights → our checkpoint: ``mnist-cnn import-keras training_1/cp-0010.weights.h5``.

Reads with h5py alone (no Keras, no TensorFlow):

- Keras 3 ``.weights.h5``, what ``ModelCheckpoint(save_weights_only=True)`` and ``model.save_weights`` write
  today: ``layers/<layer>/vars/0`` (kernel) and ``vars/1`` (bias); also a ``.keras`` archive (a zip that holds
  ``model.weights.h5`` in that layout).
- Keras 2 HDF5 weights, ``model.save_weights("x.h5")``: a ``layer_names`` attribute, one group per layer with
  a ``weight_names`` attribute naming its datasets (``conv2d/kernel:0``, ``conv2d/bias:0``); also a whole
  model saved with ``model.save("x.h5")``, whose ``model_weights`` group has the same layout.

Layers are matched to ours by their kernel shapes (all five differ), so custom layer names work. Conversions:
Conv2D kernels HWIO → OIHW; Dense kernels (in,out) → (out,in); and the 576 inputs of the first Dense layer are
reordered from Keras's channels-last flatten (h,w,c) to PyTorch's channels-first one (c,h,w).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_cnn import MnistCnnError

# our layer, Keras kernel shape: Conv2D HWIO = (kh, kw, in, out), Dense = (in, out)
TUTORIAL = (("conv1", (3, 3, 1, 32)), ("conv2", (3, 3, 32, 64)), ("conv3", (3, 3, 64, 64)),
            ("fc1", (576, 64)), ("fc2", (64, 10)))
EXPECTED = ("the tutorial's Conv2D(32,3) → Conv2D(64,3) → Conv2D(64,3) → Dense(64) → Dense(10) on 28×28×1 "
            "inputs, i.e. kernels " + ", ".join("×".join(map(str, s)) for _, s in TUTORIAL) + " with biases")
FORMATS_HINT = ("a Keras 3 .weights.h5 (or .keras archive) or a Keras 2 HDF5 weights file "
                "(model.save_weights('x.h5') or model.save('x.h5'))")


@dataclass
class KerasLayer:
    name: str
    weights: list[np.ndarray]  # in Keras's order: kernel, then bias


def _attr_list(group, name: str) -> list[str]:
    """A string-list attribute, including Keras's chunked form (name0, name1, …) for long lists."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _keras3_layers(layers_group) -> list[KerasLayer]:
    """Every ``…/vars`` group under ``layers`` (nested models included); vars are named 0, 1, …

    Only ``layers`` is searched: a compiled model's file also holds ``optimizer/vars``, whose Adam moments
    have the kernels' shapes.
    """
    import h5py

    found: list[KerasLayer] = []

    def visit(name, obj):
        if name.split("/")[-1] == "vars" and isinstance(obj, h5py.Group) and len(obj):
            found.append(KerasLayer(name.rsplit("/vars", 1)[0], [obj[str(i)][()] for i in range(len(obj))]))

    layers_group.visititems(visit)
    return found


def _keras2_layers(group) -> list[KerasLayer]:
    """Layers in model order from ``layer_names``; each layer's datasets in its ``weight_names`` order."""
    found = []
    for name in _attr_list(group, "layer_names"):
        names = _attr_list(group[name], "weight_names")
        if names:
            found.append(KerasLayer(name, [group[name][w][()] for w in names]))
    return found


def _open(path: Path):
    """An h5py File for an .h5 file or the model.weights.h5 inside a .keras zip."""
    import h5py

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if "model.weights.h5" not in z.namelist():
                raise MnistCnnError(f"{path} is a zip without model.weights.h5: expected {FORMATS_HINT}")
            return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r"), "Keras 3 .keras archive"
    if not h5py.is_hdf5(path):
        raise MnistCnnError(f"{path} is not an HDF5 file: expected {FORMATS_HINT}")
    return h5py.File(path, "r"), None


def read_keras_weights(path: str | Path) -> tuple[list[KerasLayer], str]:
    """(layers with weights, a description of the format found) from a Keras weights file."""
    path = Path(path)
    if not path.is_file():
        raise MnistCnnError(f"Keras weights file not found: {path}")
    try:
        import h5py  # only this command needs it
    except ImportError:
        raise MnistCnnError("import-keras needs h5py: pip install h5py") from None
    try:
        f, fmt = _open(path)
        with f:
            whole_model = "model_weights" in f  # Keras 2 model.save("x.h5"): weights in a subgroup
            root = f["model_weights"] if whole_model else f
            if "layer_names" in root.attrs or "layer_names0" in root.attrs:
                return _keras2_layers(root), "Keras 2 HDF5 weights" + (" (whole model)" if whole_model else "")
            if isinstance(root.get("layers"), h5py.Group):
                return _keras3_layers(root["layers"]), fmt or "Keras 3 .weights.h5"
    except (OSError, KeyError, ValueError) as e:
        raise MnistCnnError(f"cannot read {path} as Keras weights ({e}): expected {FORMATS_HINT}") from None
    raise MnistCnnError(f"{path} is an HDF5 file without Keras weights (no 'layers' group, no 'layer_names' "
                        f"attribute): expected {FORMATS_HINT}")


def match_tutorial(layers: list[KerasLayer], source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{our layer: (kernel, bias)} by kernel shape; MnistCnnError naming what was expected otherwise."""
    found = ", ".join(f"{l.name} " + "/".join("×".join(map(str, w.shape)) for w in l.weights) for l in layers)
    by_shape = {tuple(l.weights[0].shape): l for l in layers}
    matched = {}
    for ours, shape in TUTORIAL:
        layer = by_shape.get(shape)
        if layer is None or len(layer.weights) != 2 or layer.weights[1].shape != (shape[-1],):
            raise MnistCnnError(f"{source} does not hold {EXPECTED}; found: {found or 'no weights'}")
        matched[ours] = (layer.weights[0], layer.weights[1])
    if len(layers) != len(TUTORIAL):
        raise MnistCnnError(f"{source} holds {len(layers)} layers with weights, not 5: expected {EXPECTED}; "
                            f"found: {found}")
    return matched


def convert(matched: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Keras arrays → our state_dict's arrays (float32)."""
    out: dict[str, np.ndarray] = {}
    for name, (kernel, bias) in matched.items():
        kernel = np.asarray(kernel, np.float32)
        if kernel.ndim == 4:  # (kh,kw,in,out) → (out,in,kh,kw); both frameworks cross-correlate: no flip
            weight = kernel.transpose(3, 2, 0, 1)
        elif name == "fc1":  # rows are Keras's flatten of (h=3,w=3,c=64); ours flattens (c,h,w)
            weight = kernel.reshape(3, 3, 64, 64).transpose(2, 0, 1, 3).reshape(576, 64).T
        else:
            weight = kernel.T  # (in,out) → (out,in)
        out[f"{name}.weight"] = np.ascontiguousarray(weight)
        out[f"{name}.bias"] = np.asarray(bias, np.float32)
    return out


def mnist_test_accuracy(model) -> float:
    """Accuracy of a torch model on the bundled MNIST test set (pixels / 255, as the tutorial scaled them)."""
    import torch

    from mnist_cnn.data import load_mnist

    images, labels = load_mnist("test")
    x = torch.tensor(images).float().div_(255).unsqueeze(1)  # a copy: the IDX buffer is read-only
    with torch.inference_mode():
        predicted = torch.cat([model(part).argmax(1) for part in x.split(2000)]).numpy()
    return float((predicted == labels).mean())


def import_keras(path: str | Path, out: str | Path, check: bool = True) -> dict:
    """Convert a Keras weights file into a checkpoint at ``out``; returns what was done.

    With ``check``, the imported model is scored on the MNIST test set and the accuracy stored as best_acc.
    """
    import torch

    from mnist_cnn.checkpoint import atomic_write, checkpoint_bytes
    from mnist_cnn.config import TrainConfig
    from mnist_cnn.model import build_model, count_parameters

    layers, fmt = read_keras_weights(path)
    state = {k: torch.from_numpy(v) for k, v in convert(match_tutorial(layers, f"{path} ({fmt})")).items()}
    broken = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if broken:  # a diverged training or a damaged file: every prediction would be NaN
        raise MnistCnnError(f"{path}: NaN or infinite weights in {', '.join(broken)} (Keras names mapped to ours); "
                            f"not imported")
    model = build_model("tutorial")
    model.load_state_dict(state)  # strict: every parameter must come from the file
    model.eval()
    accuracy = mnist_test_accuracy(model) if check else None
    ckpt = {"model_name": "tutorial", "model": model.state_dict(), "step": 0,
            "best_acc": accuracy or 0.0, "temperature": 1.0, "config": TrainConfig().to_dict(), "history": [],
            "imported_from": {"file": str(path), "format": fmt}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, checkpoint_bytes(ckpt))
    return {"format": fmt, "layers": len(layers), "parameters": count_parameters(model), "accuracy": accuracy,
            "out": str(out)}


def default_out(path: str | Path) -> Path:
    """``cp-0010.weights.h5`` → ``cp-0010.pt`` (also ``.h5`` and ``.keras``), next to the input."""
    path = Path(path)
    name = path.name
    for suffix in (".weights.h5", ".h5", ".hdf5", ".keras"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".pt")
