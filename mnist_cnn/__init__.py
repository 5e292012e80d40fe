"""mnist-cnn: handwritten digit recognition with the TensorFlow tutorial's CNN, on PyTorch.

Run ``mnist-cnn --help`` (or ``python -m mnist_cnn --help``) for the commands; docs/python-api.md shows the
same work from Python: ``from mnist_cnn import Predictor``.

``import mnist_cnn`` stays cheap (no numpy, no torch, no submodule): the names in ``LAZY`` are imported from
their modules the first time they are asked for (PEP 562). Training and evaluation are the functions
``mnist_cnn.train.train`` and ``mnist_cnn.evaluate.evaluate``, not exported here: a package attribute named
``train`` or ``evaluate`` would be replaced by the submodule of that name as soon as it is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name → the module that defines it; kept in step with the TYPE_CHECKING imports below (tests/test_api.py)
LAZY = {"Predictor": "mnist_cnn.predict", "Prediction": "mnist_cnn.predict"}

if TYPE_CHECKING:  # what type checkers see for the lazy names
    from mnist_cnn.predict import Prediction, Predictor

__all__ = ["MnistCnnError", "TooLarge", "NotAnImage", "CorruptImage", "RunInUse", "__version__", *LAZY]


def __getattr__(name: str):
    if name in LAZY:
        value = getattr(importlib.import_module(LAZY[name]), name)
        globals()[name] = value  # once imported, an ordinary attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY))


class MnistCnnError(Exception):
    """An error with a message a user can act on; the CLI prints it as one line and exits non-zero."""


class TooLarge(MnistCnnError):
    """An upload, file or image over a size limit (HTTP 413)."""


class NotAnImage(MnistCnnError):
    """Bytes that no supported image format can read (HTTP 415)."""


class CorruptImage(MnistCnnError):
    """An image format that was recognised, but a file that is truncated or damaged (HTTP 422)."""


class RunInUse(MnistCnnError):
    """A run folder that another process is training in."""
