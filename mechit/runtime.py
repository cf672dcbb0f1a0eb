"""Runtime settings in one place: devices and dtypes, threads for small dense work, and
memory given back to the OS.

Devices and dtypes: :func:`choose_device` and :func:`choose_dtype` are the one place a
device or a dtype is chosen (docs/loading.md): CUDA when there is one, else the CPU; the
model's own dtype on a GPU and float32 on the CPU. :func:`compute_dtype` (and :func:`upcast`, a tensor in it) is the dtype of
the numerically delicate steps (softmax of the target probability, norms, SVD and
eigen-decompositions, similarity thresholds): float32 whatever the model's dtype, float64
for a float64 model. :func:`free_memory` is what a device has left, for the memory plan. Bad names raise ValueError (this base module imports no mechit
module; :func:`mechit.models.load_model` turns it into a one-line InputError).

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
import os
from typing import Iterator

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
"""dtype names accepted by ``--dtype`` and :func:`choose_dtype` (besides "auto")."""


def choose_device(device: "str | torch.device | None" = None) -> torch.device:
    """The device to load on: ``device`` itself, or (None, "auto") CUDA when there is one, else the CPU.

    >>> choose_device("cpu")
    device(type='cpu')
    >>> choose_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    True
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r}: not a torch device (use cpu, cuda, cuda:1, mps or auto)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: CUDA is not available on this machine (use --device cpu)")
    return chosen


def choose_dtype(dtype: "str | torch.dtype | None", device: "str | torch.device", own: "str | torch.dtype | None" = None
                 ) -> torch.dtype:
    """The dtype to load weights in: ``dtype`` itself, or (None, "auto") float32 on the CPU and
    the model's ``own`` dtype (float32 when unknown) elsewhere.

    bfloat16 and float16 matrix products are slow on CPUs, and float32 is what the CPU
    results were validated in; GPUs run the checkpoint's own dtype at half the memory.

    >>> choose_dtype("auto", "cpu", "bfloat16"), choose_dtype(None, "cuda", "bfloat16")
    (torch.float32, torch.bfloat16)
    >>> choose_dtype("bfloat16", "cpu")
    torch.bfloat16
    >>> choose_dtype("int8", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: --dtype 'int8': use auto, float32, bfloat16, float16 or float64
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if torch.device(device).type == "cpu":
            return torch.float32
        dtype = own if own is not None else "float32"
        if isinstance(dtype, torch.dtype):
            return dtype
        return DTYPES.get(str(dtype).removeprefix("torch."), torch.float32)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use auto, float32, bfloat16, float16 or float64")
    return DTYPES[dtype]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of numerically delicate steps for a model in ``dtype``: at least float32.

    >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.promote_types(dtype, torch.float32)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in :func:`compute_dtype` of its dtype (itself when it already is: float32, float64).

    >>> upcast(torch.ones(1, dtype=torch.bfloat16)).dtype, upcast(torch.ones(1, dtype=torch.float64)).dtype
    (torch.float32, torch.float64)
    """
    return t.to(compute_dtype(t.dtype))


def device_of(model) -> torch.device:
    """The device a model's weights live on: where every tensor an analysis makes for it goes.

    >>> device_of(model).type
    'cpu'
    """
    return next(model.parameters()).device


def free_memory(device: "str | torch.device") -> int:
    """Bytes ``device`` has free now: CUDA's free memory, or the memory the OS can give (CPU).

    >>> free_memory("cpu") > 0
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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
