"""What a model's results were computed from: a fingerprint of its files, read without loading.

A resumed run keys every record by the weights it came from (:func:`weights_fingerprint`)
as well as by the example's content, so replacing the weights in a model folder never
brings old scores back. The fingerprint hashes, for every file of the model directory (or
the ``.gguf`` file): its name, size and modification time, and the full header of each
safetensors file (tensor names, shapes, dtypes, offsets). Reading it costs a ``stat`` per
file and a few kilobytes; no weight is read.

>>> weights_fingerprint("organism-tuned") == weights_fingerprint("organism-tuned")
True
>>> weights_fingerprint("organism-tuned") == weights_fingerprint("organism-base")
False
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from mechit.errors import SpecError
from mechit.models.loading import resolve_spec


def _cached_snapshot(repo: str) -> "Path | None":
    """The local snapshot of a cached hub id; None when it is not cached (the hub is never contacted)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and friends)
        return None


def weights_fingerprint(spec: "str | Path") -> "str | None":
    """A short hash of the files ``spec`` loads from (see the module docstring); None when the
    spec names no local files (a hub id not in the cache, or a name only a custom loader knows).

    >>> len(weights_fingerprint("organism-tuned")), weights_fingerprint("not/cached-model")
    (16, None)
    """
    try:
        source = resolve_spec(spec)
    except SpecError:
        return None
    path = Path(source.location) if source.kind != "hub" else _cached_snapshot(source.location)
    if path is None:
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    for file in files:
        stat = file.stat()  # follows the hub cache's symlinks to the blobs
        digest.update(f"{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        if file.suffix == ".safetensors":
            with open(file, "rb") as f:
                head = f.read(8)
                if len(head) == 8:
                    digest.update(f.read(min(struct.unpack("<Q", head)[0], stat.st_size)))
    return digest.hexdigest()[:16]
