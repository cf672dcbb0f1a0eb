"""Merge: the tables of a sharded or Ray run, built from its records as a single process builds them.

Every runner (one process, ``--shard I/N``, ``--ray``) writes the same atomic record per
(model, example) under ``DIR/records/`` and ``DIR/tensors/``, and the same run manifest
``DIR/attribution_run.json``. Merging reads the records in the manifest's order (models as
given, then examples in file order) through :func:`mechit.attribution.dataset.collect_tables`
and writes the tables with :func:`mechit.store.write_table`, so the tables are the same
rows in the same order, and the same parquet bytes, as a single-process run's.

>>> merge("runs/attr")["done"]                                    # doctest: +SKIP
716
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mechit.attribution.dataset import (
    MANIFEST,
    collect_tables,
    run_summary,
    write_dataset_tables,
)
from mechit.data.prompts import PromptRecord
from mechit.errors import InputError
from mechit.store import Manifest, RecordStore, remove_stale_temporaries


def read_manifest(out: str | Path) -> dict:
    """The settings of the run in ``out`` (models, ids, response, options).

    >>> read_manifest("nowhere")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: nowhere: no attribution_run.json; start the run with `mechit attribute --out nowhere` first
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise InputError(f"{out}: no {MANIFEST}; start the run with `mechit attribute --out {out}` first")
    settings = Manifest.load(path).settings
    if not all(isinstance(settings.get(key), list) for key in ("models", "ids")):
        raise InputError(f"{path}: its settings lack the lists 'models' and 'ids'; not a `mechit attribute` run, "
                         "or a damaged one: rerun `mechit attribute` with the same arguments")
    return settings


def missing_records(store: RecordStore, specs: Sequence[str], ids: Sequence[str]) -> list[tuple[str, str]]:
    """The (model, example id) pairs of the run that have no sound record yet (none, or one cut
    short), in table order.

    >>> missing_records(RecordStore("empty"), ["base"], ["e1", "e2"])
    [('base', 'e1'), ('base', 'e2')]
    """
    return [(spec, key) for spec in specs for key in ids if store.state(spec, key) != "done"]  # a cut record too


def write_tables(out: str | Path, specs: Sequence[str], ids: Sequence[str], table_format: str) -> dict:
    """Collect every record of the run into the two tables, write them atomically, return the summary.

    Every record must exist (see :func:`merge` for the checked entry point).

    >>> write_tables("runs/attr", ["organism-base"], ["translate-000"], "parquet")  # doctest: +SKIP
    {'done': 1, 'failed': 0, 'failures': [], 'empty': 0, 'empty_responses': []}
    """
    out = Path(out)
    placeholders = [PromptRecord(key, "", None) for key in ids]  # collect_tables reads only the ids
    examples, tokens = collect_tables(RecordStore(out), specs, placeholders)
    write_dataset_tables(examples, tokens, out, table_format)
    return run_summary(examples)


def merge(out: str | Path, table_format: str = "parquet") -> dict:
    """Write the tables of the run in ``out`` (as ``table_format``: parquet or csv) from its
    records; refuse while records are missing.

    Temporary files that killed writers left under ``records/`` and ``tensors/`` are removed
    first (once every record exists, no runner is writing one). Returns the summary of
    :func:`mechit.attribution.dataset.run_summary`.

    >>> from mechit.store import write_json
    >>> _ = write_json("run/attribution_run.json", {"settings": {"models": ["base"], "ids": ["e1", "e2"]}, "finished": {}})
    >>> merge("run")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: run: 2 of 2 records are missing (first: [base] e1); finish the run (rerun the shards that did not complete, or the same command), then merge
    """
    out = Path(out)
    manifest = read_manifest(out)
    specs, ids = manifest["models"], manifest["ids"]
    missing = missing_records(RecordStore(out), specs, ids)
    if missing:
        raise InputError(f"{out}: {len(missing)} of {len(specs) * len(ids)} records are missing "
                         f"(first: [{missing[0][0]}] {missing[0][1]}); finish the run (rerun the shards that "
                         "did not complete, or the same command), then merge")
    for folder in ("records", "tensors"):
        remove_stale_temporaries(out / folder)
    return write_tables(out, specs, ids, table_format)
