"""Files of a run: one atomic write path, one settings check, resumable per-example records.

Every file mechit writes goes through :func:`atomic_path` (a temporary file in the same
folder, flushed to the disk with ``fsync`` and moved into place with :func:`os.replace`): JSON (:func:`write_json`), tables
(:func:`write_table`), safetensors (:class:`RecordStore`) and the other writers that call
it. A run directory holds a :class:`Manifest`: the settings that made it (a run with other
settings is refused rather than mixed) and what is finished.

A long run over many examples and models writes each finished (model, example) as its
own small files under ``DIR/records/`` and ``DIR/tensors/``, each written to a temporary
file in the same folder and moved into place with :func:`os.replace`. The JSON record is
written last and marks the pair done, so an interrupted run leaves no half record; a rerun
skips what is done (:meth:`RecordStore.done`) and never duplicates it. At the end the
caller collects the records in its own deterministic order and writes the tables with
:func:`write_table` (also atomic). Everything is plain files: JSON, safetensors,
parquet or CSV; nothing is pickled.

>>> store = RecordStore("run")
>>> if not store.done("base", "ex1"):
...     store.write("base", "ex1", {"score": 0.5}, tensors={"raw": torch.zeros(2, 3)})
>>> store.read("base", "ex1")
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
from typing import Any

import pandas as pd
from safetensors.torch import load_file, save_file

from mechit.errors import InputError, first_line


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

    >>> with atomic_path("out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> Path("out.txt").read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.mechit-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results get the usual mode
        _fsync(tmp)  # the bytes reach the disk before the name does: a power cut leaves old or new, never empty
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path: "str | Path") -> None:
    """Flush a file's (or a directory's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    >>> _ = Path("runs").mkdir(exist_ok=True), Path("runs/.t.json.mechit-999999999-k2j4h5g6.tmp").write_text("")
    >>> remove_stale_temporaries("runs")        # pid 999999999 does not run
    [PosixPath('runs/.t.json.mechit-999999999-k2j4h5g6.tmp')]
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


def _json_default(value: Any) -> Any:
    """numpy/torch scalars as Python numbers, paths as strings (for :func:`json.dumps`)."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (keys in their order; numpy scalars and paths allowed).

    >>> write_json("run.json", {"n": np.int64(3), "out": Path("runs")}).read_text()
    '{\\n  "n": 3,\\n  "out": "runs"\\n}\\n'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n",
                       encoding="utf-8")
    return path


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame atomically as parquet, or CSV when ``path`` ends in ``.csv``.

    >>> write_table(pd.DataFrame({"a": [1]}), "out/table.parquet")
    PosixPath('out/table.parquet')
    >>> pd.read_parquet("out/table.parquet")
       a
    0  1
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def read_tables(directory: str | Path, names) -> dict[str, pd.DataFrame]:
    """``{name: DIR/name.parquet}`` for ``names``: the finished tables of a resumed run, read once.

    >>> _ = write_table(pd.DataFrame({"a": [1]}), "out/t.parquet")
    >>> read_tables("out", ["t"])["t"].shape
    (1, 1)
    """
    return {name: pd.read_parquet(Path(directory) / f"{name}.parquet") for name in names}


class Manifest:
    """A run directory's JSON manifest: the settings that made the run, and the steps it finished.

    The one settings check of mechit: :meth:`open` refuses a directory whose manifest holds
    other settings (another model, prompt set or options), naming what differs, so two
    runs never mix their files in one directory. The file is
    ``{"settings": {...}, "finished": {step: info}}``, written atomically on every change.

    >>> m = Manifest.open("runs/m.json", {"model": "a", "top_k": 100})
    >>> m.done("heads")
    False
    >>> m.finish("heads", tables=["head_pairs"], seconds=1.5)
    >>> Manifest.open("runs/m.json", {"model": "a", "top_k": 100}).finished
    {'heads': {'tables': ['head_pairs'], 'seconds': 1.5}}
    >>> Manifest.open("runs/m.json", {"model": "b", "top_k": 100})
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: runs holds a run with other settings (differs in: model); resume with the same arguments, or use another output directory
    """

    def __init__(self, path: Path, settings: dict, finished: dict):
        self.path = path
        self.settings = settings
        self.finished = finished

    @classmethod
    def open(cls, path: str | Path, settings: dict) -> Manifest:
        """The manifest at ``path`` (new and unsaved if there is none); refuse other settings."""
        path = Path(path)
        if not path.exists():
            return cls(path, settings, {})
        existing = cls.load(path)
        stored, finished = existing.settings, existing.finished
        # compared as JSON, the form they are stored in (tuples become lists); a value stored as
        # null was not known then (weights of a hub model not yet downloaded) and matches any
        settings_json = json.loads(json.dumps(settings, default=_json_default))
        diff = sorted(k for k in set(stored) | set(settings_json)
                      if stored.get(k) != settings_json.get(k) and not (k in stored and stored[k] is None))
        if diff:
            raise InputError(f"{path.parent} holds a run with other settings (differs in: {', '.join(diff)}); "
                             "resume with the same arguments, or use another output directory")
        return cls(path, settings, finished)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """The manifest stored at ``path``, as it is (no ``finished`` entry: nothing finished); one
        line naming the file when it does not parse.

        >>> _ = Path("bad.json").write_text("{")
        >>> Manifest.load("bad.json")
        Traceback (most recent call last):
        ...
        mechit.errors.InputError: bad.json: corrupt settings file of a run (JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); delete it and rerun the same command: finished records are checked against their inputs and reused
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stored = data["settings"]
            finished = data.get("finished", {})
            if not isinstance(stored, dict) or not isinstance(finished, dict):
                raise TypeError("'settings' and 'finished' must be objects")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
            why = f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else type(error).__name__
            raise InputError(f"{path}: corrupt settings file of a run ({why}); delete it and rerun the same "
                             "command: finished records are checked against their inputs and reused") from error
        return cls(path, stored, finished)

    def done(self, step: str) -> bool:
        """Whether ``step`` is recorded as finished."""
        return step in self.finished

    def save(self) -> None:
        """Write the manifest (atomically)."""
        write_json(self.path, {"settings": self.settings, "finished": self.finished})

    def finish(self, step: str, **info) -> None:
        """Record ``step`` as finished with ``info`` (tables, seconds, ...) and save."""
        self.finished[step] = info
        self.save()


class RecordStore:
    """Per-(model, example) records under one run directory.

    Layout: ``DIR/records/<model>/<example>.json`` (the record; its presence means done)
    and ``DIR/tensors/<model>/<example>.safetensors`` (optional tensors, readable with
    ``safetensors.torch.load_file``; metadata key "mechit" holds the model and example id as
    JSON). Names are
    :func:`slug` forms.

    >>> RecordStore("run").tensor_path("base", "ex1").name
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
        """Whether (model, key) has a record file (see :meth:`state` for whether it is sound and current)."""
        return self.record_path(model, key).is_file()

    def state(self, model: str, key: str, inputs: dict | None = None) -> str:
        """What a rerun must do with (model, key): "done" (a record that parses, computed from
        ``inputs``), "missing", "corrupt" (a record that does not parse: a write cut short), or
        "changed: NAME" for the first entry of ``inputs`` that differs from what the record was
        computed from. An entry that is None on either side is unknown and matches.

        >>> store = RecordStore("run")
        >>> store.write("m", "ex", {"score": 1}, inputs={"example": "a1", "weights": "w1"})
        >>> store.state("m", "ex", {"example": "a1", "weights": "w1"}), store.state("m", "ex", {"example": "a2", "weights": "w1"})
        ('done', 'changed: example')
        """
        path = self.record_path(model, key)
        if not path.is_file():
            return "missing"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            stored["record"]
        except (OSError, ValueError, KeyError, TypeError):
            return "corrupt"
        was = stored.get("inputs") or {}
        for name, value in (inputs or {}).items():
            if value is not None and was.get(name) != value and not (name in was and was[name] is None):
                return f"changed: {name}"
        return "done"

    def write(self, model: str, key: str, record: dict, *, tensors: dict | None = None,
              inputs: dict | None = None) -> None:
        """Store one record (JSON-serialisable dict) and optional tensors, atomically, tensors first;
        ``inputs`` names what it was computed from (hashes, compared by :meth:`state`)."""
        if tensors:
            contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
            with atomic_path(self.tensor_path(model, key)) as tmp:
                # one metadata key: safetensors writes a multi-key map in arbitrary order
                save_file(contiguous, str(tmp), metadata={"mechit": json.dumps({"id": key, "model": model})})
        write_json(self.record_path(model, key), {"model": model, "id": key, "inputs": inputs or {}, "record": record})

    def read(self, model: str, key: str) -> dict:
        """The record dict written for (model, key)."""
        return json.loads(self.record_path(model, key).read_text(encoding="utf-8"))["record"]

    def read_tensors(self, model: str, key: str) -> dict:
        """The tensors written for (model, key)."""
        return load_file(str(self.tensor_path(model, key)))
