"""Entry point: ``python -m mnist_cnn …`` and ``torchrun -m mnist_cnn train …``."""

import sys

from mnist_cnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
