"""Bounded memory for decoding images: a process-wide byte budget, and freed buffers handed back to the OS.

A PNG of a few hundred kilobytes can declare 8000×8000 RGBA pixels: 256 MB once decoded, and as much again for
the premultiplied copy that Pillow's ``reduce`` makes. ``preprocess`` refuses an image whose decoding would
need more than ``MAX_DECODE_BYTES`` (from its header, before decoding), and holds ``DECODE_BUDGET`` while it
decodes and shrinks one, so that the images decoded at once in a process (a server's worker threads) never
need more than ``DECODE_BUDGET_BYTES`` together: a burst of such uploads waits its turn instead of adding up.

``return_big_buffers`` makes glibc serve large allocations with mmap at a fixed threshold, so that they go
back to the OS when freed. By default glibc raises that threshold after the first large free (up to 32 MiB),
and later multi-megabyte buffers, such as Pillow's 16 MiB pixel blocks, stay in its heap after the request.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager

MAX_DECODE_BYTES = 256 * 2**20  # one image: e.g. 8000×8000 RGB, or 5600×5600 RGBA
DECODE_BUDGET_BYTES = 2 * MAX_DECODE_BYTES  # all the images a process decodes at once
MMAP_THRESHOLD = 4 * 2**20  # allocations from this size on are mmapped, and unmapped when freed


class ByteBudget:
    """A counting semaphore in bytes: ``hold(n)`` waits until n more bytes fit under the total."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, n: int):
        n = min(n, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


DECODE_BUDGET = ByteBudget(DECODE_BUDGET_BYTES)


def return_big_buffers() -> None:
    """glibc: allocations of MMAP_THRESHOLD and more come from mmap, and return to the OS when freed."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD; fixed, so never raised again
    except (OSError, AttributeError):
        pass  # not glibc: its allocator keeps its own policy
