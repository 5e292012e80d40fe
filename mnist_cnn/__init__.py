"""mnist-cnn: handwritten digit recognition with the TensorFlow tutorial's CNN, on PyTorch.

Run ``mnist-cnn --help`` (or ``python -m mnist_cnn --help``) for the commands.
"""

__version__ = "0.1.0"


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
