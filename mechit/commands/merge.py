"""``mechit merge DIR``: the tables of a sharded or Ray run, from its records.

    mechit merge runs/attr        # a `mechit attribute` run: its two tables
    mechit merge runs/compare     # a `mechit compare` run: the rest of the comparison, in process

The last shard to finish merges by itself; run this after shards that were stopped and
finished by hand, or to rebuild the tables. The tables equal a single-process run's.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the ``merge`` subcommand."""
    p = subparsers.add_parser(
        "merge", help="build the tables of a sharded or Ray run (attribute or compare) from its records",
        description="Collect the per-example records of DIR (written by `mechit attribute --shard I/N` or "
                    "`--ray`) into attribution_examples/attribution_tokens, as a single-process run writes them; "
                    "for a `mechit compare` directory, run the rest of the comparison (weight stages, tables, "
                    "report) in process from its per-prompt records.",
    )
    p.add_argument("dir", metavar="DIR", help="output directory of the run")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                   help="table format, as the run's `mechit attribute --format` (default parquet)")
    p.set_defaults(run=run_merge)


def run_merge(args) -> int:
    """Merge and print a one-line summary; exit 1 when some examples failed (as `mechit attribute`)."""
    from pathlib import Path

    from mechit.distributed import merge
    from mechit.pipeline.run import MANIFEST

    if (Path(args.dir) / MANIFEST).is_file():  # a `mechit compare` directory
        from mechit.pipeline.finish import finish_compare

        path = finish_compare(args.dir)
        print(f"report: {path}" if path.suffix == ".html" else f"tables: {path}", file=sys.stdout)
        return 0

    summary = merge(args.dir, args.format)
    print(f"merge: {summary['done']} done, {summary['failed']} failed, {summary['empty']} empty responses; "
          f"tables in {args.dir}", file=sys.stderr)
    return 1 if summary["failed"] else 0
