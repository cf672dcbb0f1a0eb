"""mechit/runtime.py: freed heap memory goes back to the OS, and nothing a model computes changes."""

from __future__ import annotations

import pytest
import torch

from mechit.models import load_model, loading

TEXT = "Translate the cat into French, please."


# ---------------------------------------------------------------- freed memory back to the OS
def _rss_anon_mb() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status RssAnon (not Linux)")


def test_release_free_memory_returns_freed_heap_pages():
    import ctypes

    from mechit import runtime as memory

    if memory._malloc_trim() is None:
        pytest.skip("not glibc")
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 * 1024, 1024  # 64 MiB in blocks below any mmap threshold: all on the heap
    blocks = [libc.malloc(size) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 1, size)  # resident now
    for block in blocks[:-1]:
        libc.free(block)  # the last block stays, so free() cannot shrink the heap top itself
    before = _rss_anon_mb()
    assert memory.release_free_memory() is True
    released = before - _rss_anon_mb()
    libc.free(blocks[-1])
    assert released > 32, f"only {released:.1f} MiB of 64 MiB freed heap went back to the OS"


def test_load_model_releases_free_memory_and_keeps_the_weights(tiny_llama_dir, tiny_llama, monkeypatch):
    calls = []
    monkeypatch.setattr(loading, "release_free_memory", lambda: calls.append(1) or True)
    untrimmed = load_model(tiny_llama_dir)
    assert calls == [1]
    trimmed = tiny_llama  # loaded with the real release_free_memory
    assert untrimmed.original_model.state_dict().keys() == trimmed.original_model.state_dict().keys()
    for name, value in trimmed.original_model.state_dict().items():
        assert torch.equal(value, untrimmed.original_model.state_dict()[name]), name
    tokens = trimmed.to_tokens(TEXT)
    with torch.no_grad():
        assert torch.equal(trimmed(tokens), untrimmed(tokens))


def test_trim_hooks_leave_the_forward_unchanged(tiny_llama):
    from mechit.runtime import trim_hooks

    hooks = trim_hooks(tiny_llama)
    assert [name for name, _ in hooks] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    tokens = tiny_llama.to_tokens(TEXT)
    with torch.no_grad():
        assert torch.equal(tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks), tiny_llama(tokens))
