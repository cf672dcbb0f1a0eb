"""Runtime settings in one place: threads for small dense work, and memory given back to the OS.

Threads: :func:`single_thread` runs small dense work (Gram matrices, ``eigh``, row cosines)
on one thread.

Memory (glibc): freed heap memory stays resident unless it is trimmed.

glibc keeps memory that Python, NumPy and PyTorch free inside its heap and reuses it
later; the pages stay resident. Two places in mechit leave much of it behind:

- loading a model (GGUF dequantisation and the tokenizer build free a few hundred
  temporary arrays): :func:`mechit.models.load_model` calls :func:`release_free_memory`
  once at the end;
- a forward pass that keeps its autograd graph: each layer frees temporaries between
  the activations it saves, and glibc reuses few of those holes. :func:`trim_hooks`
  returns forward hooks that release them after every block.

How much each gives back, and what a call costs, is in docs/benchmarks.md.
``malloc_trim(0)`` never moves live memory, so tensors and logits are unchanged.
Elsewhere than glibc (macOS, musl) both do nothing.

>>> from mechit.runtime import release_free_memory
>>> release_free_memory() in (True, False)
True
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from typing import Iterator

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run small dense work (Gram matrices, ``eigh``, ``svdvals``, row cosines) on one thread.

    Parallel LAPACK and elementwise kernels gain little at a few hundred rows and, when
    the cores are shared, their threads spin (docs/benchmarks.md, "Threads"). The large
    products (words, vocabulary) keep the caller's thread count.

    >>> with single_thread():
    ...     inside = torch.get_num_threads()
    >>> inside
    1
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the OS; True if glibc released any.

    Live allocations stay where they are (only whole free pages are returned), so no
    tensor changes.

    >>> release_free_memory() in (True, False)
    True
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def _release_hook(tensor, hook):
    release_free_memory()
    return tensor


def trim_hooks(model) -> "list[tuple[str, object]]":
    """TransformerLens forward hooks (for ``run_with_hooks(fwd_hooks=...)``) that call
    :func:`release_free_memory` after every block (``blocks.{l}.hook_resid_post``).

    They return the activation unchanged. With them, the resident memory of a forward
    that keeps its graph grows by what the graph holds and not also by the freed holes.

    >>> ids = torch.tensor([[1, 5, 6, 7]])
    >>> torch.equal(model.run_with_hooks(ids, fwd_hooks=trim_hooks(model)), model(ids))
    True
    """
    return [(f"blocks.{layer}.hook_resid_post", _release_hook) for layer in range(model.cfg.n_layers)]
