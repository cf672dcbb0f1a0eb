"""Cheap checks of ``mechit compare`` that run before any model loads: specs, stages and
prompts (the output directory: :func:`mechit.outdir.check_out_dir`).

>>> check_specs(None, None)
('organism-base', 'organism-tuned', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from mechit.data.prompts import read_prompts
from mechit.errors import InputError
from mechit.models import ORGANISM_SPECS
from mechit.organism import held_out_prompts
from mechit.pipeline.context import STAGES


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
    (372, 'organism held-out prompts')
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
