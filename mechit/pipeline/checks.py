"""Cheap checks of ``mechit compare`` that run before any model loads: specs, stages,
prompts, output directory and free space.

>>> check_specs(None, None)
('organism-base', 'organism-tuned', True)
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from mechit.data.prompts import read_prompts
from mechit.errors import InputError, MechitError
from mechit.models import ORGANISM_SPECS
from mechit.organism import held_out_prompts
from mechit.pipeline.context import STAGES

MIN_FREE_BYTES = 50 * 2**20  # refuse to start with less free space than this in DIR


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


def check_out_dir(out: Path) -> Path:
    """Create ``out`` if needed and make sure a file can be written there and space is left.

    >>> check_out_dir(Path("runs/new"))
    PosixPath('runs/new')
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        # named like atomic_path's temporaries, so a kill here leaves nothing the next run keeps
        with tempfile.NamedTemporaryFile(dir=out, prefix=f".write-test.mechit-{os.getpid()}-", suffix=".tmp"):
            pass
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full_error(out, []) from error
        reason = error.strerror or error
        raise InputError(f"output directory {out} is not writable ({reason}); choose another --out") from error
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise MechitError(
            f"disk full: only {free / 2**20:.1f} MiB free in {out}, mechit compare needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB; free some space or choose another --out"
        )
    return out


def check_specs(base: str | Path | None, tuned: str | Path | None) -> tuple[str, str, bool]:
    """Resolve the two specs (None, None = the organism pair); refuse the same model twice.

    Returns (base, tuned, is_organism).

    >>> check_specs("a/model", "a/model")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --base and --tuned are the same model (a/model); give a pre-trained model and its tuned version
    """
    if (base is None) != (tuned is None):
        raise InputError("give both --base and --tuned, or neither (the embedded organism pair)")
    if base is None:
        return ORGANISM_SPECS[0], ORGANISM_SPECS[1], True
    base, tuned = str(base), str(tuned)
    same = base == tuned
    if not same and Path(base).exists() and Path(tuned).exists():
        same = Path(base).resolve() == Path(tuned).resolve()
    if same:
        raise InputError(
            f"--base and --tuned are the same model ({base}); give a pre-trained model and its tuned version"
        )
    return base, tuned, (base, tuned) == ORGANISM_SPECS


def parse_only(only: str | Sequence[str] | None) -> list[str]:
    """Stage names from ``--only`` ("attribution,heads"), in run order; None = all.

    >>> parse_only("ffn, attribution")
    ['attribution', 'ffn']
    """
    if only is None:
        return list(STAGES)
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if not names or unknown:
        what = f"unknown stage {unknown[0]!r}" if unknown else "no stage given"
        raise InputError(f"--only: {what}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def default_prompts_path() -> Path:
    """The built-in English instruction prompts (56 prompts, 8 task types, spans annotated).

    >>> default_prompts_path().name
    'english_prompts.jsonl'
    """
    return Path(__file__).parents[1] / "data" / "english_prompts.jsonl"


def load_records(prompts: str | Path | None, organism: bool) -> tuple[list[dict], str]:
    """Prompt records (the JSONL schema) and where they came from; validated before any model loads.

    >>> records, source = load_records(None, organism=True)
    >>> len(records), source
    (360, 'organism held-out prompts')
    """
    if prompts is None and organism:
        return [dict(r) for r in held_out_prompts()], "organism held-out prompts"
    path = default_prompts_path() if prompts is None else Path(prompts)
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist")
    records = [asdict(r) for r in read_prompts(path, strict=True)]
    if not records:
        raise InputError(f"{path}: no prompts")
    return records, str(path)
