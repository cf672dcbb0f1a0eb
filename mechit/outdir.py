"""The output-directory check every command runs before any model loads.

:func:`check_out_dir` refuses, with one line naming the directory and the reason, an
``--out`` that is empty, a file, under a virtual file system (``/proc``, ``/sys``,
``/dev``), a symlink loop, not writable (read-only, permissions, name too long) or on a
disk with less than :data:`MIN_FREE_BYTES` free. It creates the directory if needed.
:func:`disk_full_error` is the one message for a write that ran out of space later.

>>> check_out_dir("runs/new")
PosixPath('runs/new')
>>> check_out_dir("/proc/self/out")
Traceback (most recent call last):
...
mechit.errors.InputError: --out /proc/self/out lies under /proc, a virtual file system; choose another --out
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mechit.errors import InputError, MechitError

MIN_FREE_BYTES = 50 * 2**20  # refuse to start with less free space than this in DIR
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")  # kernel file systems: nothing written there is a result file


def disk_full_error(path: Path | str, done: Sequence[str]) -> MechitError:
    """The one-line error for a write that ran out of space.

    >>> disk_full_error("runs/x", ["attribution"])
    MechitError('disk full while writing runs/x: free some space and rerun the same command to resume (finished stages kept: attribution)')
    """
    kept = ", ".join(done) if done else "none"
    return MechitError(
        f"disk full while writing {path}: free some space and rerun the same command to resume "
        f"(finished stages kept: {kept})"
    )


def _virtual_root(out: Path) -> str | None:
    """The virtual file system ``out`` lies under (symlinks followed as far as they go), or None."""
    real = os.path.realpath(out)
    return next((root for root in VIRTUAL_ROOTS if real == root or real.startswith(root + os.sep)), None)


def check_out_dir(out: str | Path, *, create: bool = True, option: str = "--out") -> Path:
    """Create ``out`` if needed and make sure a file can be written there and space is left.

    Returns ``out`` as a :class:`~pathlib.Path`; raises :class:`~mechit.errors.InputError`
    (or a disk-full :class:`~mechit.errors.MechitError`) with one line otherwise, naming
    the directory as ``option`` (a command writing into its ``DIR`` argument says ``DIR``).
    With ``create=False`` the folders the check made are removed again, so a command
    refused later leaves nothing behind (mechit's writers create their folders).

    >>> check_out_dir("later/out", create=False), Path("later").exists()
    (PosixPath('later/out'), False)

    >>> _ = Path("taken").write_text("x")
    >>> check_out_dir("taken")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --out taken is not writable: it is a file, not a directory; choose another --out
    """
    if not str(out).strip():
        raise InputError(f"{option} is empty; give an output directory (use . for the current one)")
    out = Path(out)
    root = _virtual_root(out)
    if root is not None:
        raise InputError(f"{option} {out} lies under {root}, a virtual file system; choose another {option}")
    if out.is_file():
        raise InputError(f"{option} {out} is not writable: it is a file, not a directory; choose another {option}")
    missing = [] if out.is_dir() else [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        # named like atomic_path's temporaries, so a kill here leaves nothing the next run keeps
        with tempfile.NamedTemporaryFile(dir=out, prefix=f".write-test.mechit-{os.getpid()}-", suffix=".tmp"):
            pass
        free = shutil.disk_usage(out).free
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full_error(out, []) from error
        reason = error.strerror or error
        raise InputError(f"{option} {out} is not writable ({reason}); choose another {option}") from error
    finally:
        if not create:
            for folder in missing:  # deepest first
                if folder.is_dir():
                    folder.rmdir()
    if free < MIN_FREE_BYTES:
        raise MechitError(
            f"disk full: only {free / 2**20:.1f} MiB free in {out}, mechit needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB; free some space or choose another --out"
        )
    return out
