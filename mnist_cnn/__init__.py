"""mnist-cnn: handwritten digit recognition with the TensorFlow tutorial's CNN, on PyTorch.

Run ``mnist-cnn --help`` (or ``python -m mnist_cnn --help``) for the commands.
"""

__version__ = "0.1.0"


class MnistCnnError(Exception):
    """An error with a message a user can act on; the CLI prints it as one line and exits non-zero."""
