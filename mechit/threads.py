"""Thread settings for small dense work.

>>> import torch
>>> from mechit.threads import single_thread
>>> with single_thread():
...     torch.get_num_threads()
1
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run small dense work (Gram matrices, ``eigh``, ``svdvals``, row cosines) on one thread.

    Parallel LAPACK and elementwise kernels gain little at a few hundred rows and, when
    the cores are shared, their threads spin: ``eigh`` of 576 x 576 went from 0.15 s to
    5 s with 2 threads under load. The large products (words, vocabulary) keep the
    caller's thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
