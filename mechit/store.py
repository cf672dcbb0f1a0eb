"""Resumable runs: one atomic record per (model, example), final tables written atomically.

A long run over many examples and models writes each finished (model, example) as its
own small files under ``DIR/records/`` and ``DIR/tensors/``, each written to a temporary
file in the same folder and moved into place with :func:`os.replace`. The JSON record is
written last and marks the pair done, so an interrupted run leaves no half record; a rerun
skips what is done (:meth:`RecordStore.done`) and never duplicates it. At the end the
caller collects the records in its own deterministic order and writes the tables with
:func:`write_table` (also atomic). Everything is plain files: JSON, safetensors,
parquet or CSV; nothing is pickled.

>>> store = RecordStore(tmp_path)                                # doctest: +SKIP
>>> if not store.done("base", "ex1"):                           # doctest: +SKIP
...     store.write("base", "ex1", {"score": 0.5}, tensors={"raw": torch.zeros(2, 3)})
>>> store.read("base", "ex1")                                   # doctest: +SKIP
{'score': 0.5}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of a model spec or example id.

    >>> slug("HuggingFaceTB/SmolLM2-135M")
    'HuggingFaceTB_SmolLM2-135M-f08945a568'
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "x"
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# temporary files of atomic_path: ".NAME.mechit-PID-XXXXXXXX.tmp" (XXXXXXXX from tempfile.mkstemp)
_TEMPORARY = re.compile(r"\..+\.mechit-(\d+)-[a-z0-9_]{8}\.tmp")


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The temporary file is ``.NAME.mechit-PID-XXXXXXXX.tmp`` (hidden, named after the
    writing process), so a later run can tell a leftover of a killed writer from a user's
    file (:func:`remove_stale_temporaries`).

    >>> with atomic_path("out.txt") as tmp:     # doctest: +SKIP
    ...     Path(tmp).write_text("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.mechit-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results get the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process counts as not: it has no write under way at a run's start)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed mechit writers left under ``directory``; return them.

    Only names of :func:`atomic_path`'s pattern (``.NAME.mechit-PID-XXXXXXXX.tmp``) whose
    writing process no longer runs are removed; any other file, and the temporaries of a
    live mechit process, are left alone. Called when a run starts or resumes.

    >>> remove_stale_temporaries("runs/attr")   # doctest: +SKIP
    [PosixPath('runs/attr/records/base-1a2b3c4d5e/.ex1-0f1e2d3c4b.json.mechit-4242-k2j4h5g6.tmp')]
    """
    removed = []
    for root, _, names in os.walk(directory):
        for name in names:
            match = _TEMPORARY.fullmatch(name)
            if match and not _alive(int(match.group(1))):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return sorted(removed)


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON (sorted keys, exact floats) atomically.

    >>> write_json("run.json", {"models": ["a", "b"]})  # doctest: +SKIP
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame atomically as parquet, or CSV when ``path`` ends in ``.csv``.

    >>> write_table(pd.DataFrame({"a": [1]}), "out/table.parquet")  # doctest: +SKIP
    PosixPath('out/table.parquet')
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path


class RecordStore:
    """Per-(model, example) records under one run directory.

    Layout: ``DIR/records/<model>/<example>.json`` (the record; its presence means done)
    and ``DIR/tensors/<model>/<example>.safetensors`` (optional tensors, readable with
    ``safetensors.torch.load_file``; metadata key "mechit" holds the model and example id as
    JSON). Names are
    :func:`slug` forms.

    >>> RecordStore("run").tensor_path("base", "ex1").name  # doctest: +SKIP
    'ex1-....safetensors'
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def record_path(self, model: str, key: str) -> Path:
        """Where the JSON record of (model, key) lives."""
        return self.directory / "records" / slug(model) / f"{slug(key)}.json"

    def tensor_path(self, model: str, key: str) -> Path:
        """Where the safetensors file of (model, key) lives."""
        return self.directory / "tensors" / slug(model) / f"{slug(key)}.safetensors"

    def done(self, model: str, key: str) -> bool:
        """Whether (model, key) has a complete record."""
        return self.record_path(model, key).is_file()

    def write(self, model: str, key: str, record: dict, *, tensors: dict | None = None) -> None:
        """Store one record (JSON-serialisable dict) and optional tensors, atomically, tensors first."""
        if tensors:
            from safetensors.torch import save_file

            contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
            with atomic_path(self.tensor_path(model, key)) as tmp:
                # one metadata key: safetensors writes a multi-key map in arbitrary order
                save_file(contiguous, str(tmp), metadata={"mechit": json.dumps({"id": key, "model": model})})
        write_json(self.record_path(model, key), {"model": model, "id": key, "record": record})

    def read(self, model: str, key: str) -> dict:
        """The record dict written for (model, key)."""
        return json.loads(self.record_path(model, key).read_text(encoding="utf-8"))["record"]

    def read_tensors(self, model: str, key: str) -> dict:
        """The tensors written for (model, key)."""
        from safetensors.torch import load_file

        return load_file(str(self.tensor_path(model, key)))
