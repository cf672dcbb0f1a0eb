"""``--shard I/N``: one deterministic share of a dataset attribution run, merged by the last shard.

Any scheduler fans a run out by starting the same command with ``--shard 0/N`` ...
``--shard N-1/N`` on one shared output directory (a SLURM array, a Kubernetes indexed
job, N terminals: docs/distributed.md). Each shard checks the run manifest (the same one
a single process writes, so every shard must be given the same arguments), attributes
its examples (:func:`mechit.distributed.shards.shard_records`) under every model, one
model loaded at a time, and writes each as the usual atomic record. The shard that finds
every record of the run done when it finishes merges them into the tables
(:func:`mechit.distributed.merge.write_tables`); ``mechit merge DIR`` does the same by hand.

A shard rerun skips its examples that have records, so a crashed shard is resumed by
starting it again. Two processes of the same shard are refused (:mod:`mechit.distributed.lock`).

>>> summary = run_shard(["organism-tuned"], records, "runs/attr", shard=(0, 4))  # doctest: +SKIP
>>> summary["pending"]                                                          # doctest: +SKIP
135
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from mechit.attribution.dataset import (
    attribute_records,
    collect_tables,
    open_run_manifest,
    record_inputs,
    run_summary,
)
from mechit.data.prompts import PromptRecord
from mechit.distributed.lock import run_lock
from mechit.distributed.merge import missing_records, write_tables
from mechit.distributed.shards import shard_records
from mechit.errors import InputError
from mechit.models import load_model
from mechit.store import RecordStore


def prepare_run(specs: Sequence[str], records: Sequence[PromptRecord], out: str | Path, *, response: str,
                table_format: str, options: dict) -> Path:
    """Check the arguments of a run and write (or check) its manifest, as a single-process run does; return ``out``.

    The manifest is the one :func:`mechit.attribution.attribute_dataset` writes, so a run
    can be started by one runner and finished by another.

    >>> prepare_run(["m", "m"], [], "out", response="reference", table_format="parquet", options={})
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: the same --model is given twice
    """
    if response not in ("reference", "generate"):
        raise InputError(f"--response must be 'reference' or 'generate', not {response!r}")
    if table_format not in ("parquet", "csv"):
        raise InputError(f"--format must be 'parquet' or 'csv', not {table_format!r}")
    if len(set(specs)) != len(specs):
        raise InputError("the same --model is given twice")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory; choose another --out")
    open_run_manifest(out, specs, records, response, options)
    return out


def generated_length(response: str, options: dict) -> int | None:
    """The response length the split assumes for every example when responses are generated, else None.

    >>> generated_length("generate", {"max_new_tokens": 64}), generated_length("reference", {})
    (64, None)
    """
    return options.get("max_new_tokens", 128) if response == "generate" else None


def run_shard(
    specs: Sequence[str],
    records: Sequence[PromptRecord],
    out: str | Path,
    *,
    shard: tuple[int, int],
    response: str = "reference",
    table_format: str = "parquet",
    loader: Callable | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Attribute shard ``shard = (I, N)`` of ``records`` under every model spec; merge if the run is complete.

    Arguments are those of :func:`mechit.attribution.attribute_dataset`. Returns its
    summary over the whole run when this shard completed it (and wrote the tables), else
    the summary over this shard's examples; ``pending`` counts the records of the run
    still missing (0 once the tables are written).

    >>> run_shard(["organism-base"], records, "runs/attr", shard=(1, 3))["pending"]  # doctest: +SKIP
    0
    """
    index, n_shards = shard
    out = prepare_run(specs, records, out, response=response, table_format=table_format, options=options)
    mine = shard_records(records, index, n_shards, generated_length(response, options))
    store = RecordStore(out)
    loader = loader or load_model
    with run_lock(out, f"shard {index}/{n_shards}"):
        for spec in specs:
            inputs = record_inputs(spec, mine)
            todo = [r for r in mine if store.state(spec, r.id, inputs[r.id]) != "done"]
            attribute_records(store, spec, todo, inputs, loader, options, response, progress=progress,
                              desc=f"attribute {spec} (shard {index}/{n_shards})")
    ids = [r.id for r in records]
    pending = len(missing_records(store, specs, ids))
    if pending == 0:
        return {**write_tables(out, specs, ids, table_format), "pending": 0}
    examples, _ = collect_tables(store, specs, mine)
    return {**run_summary(examples), "pending": pending}
