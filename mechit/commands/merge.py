"""``mechit merge DIR``: the tables of a sharded or Ray attribution run, from its records.

    mechit merge runs/attr

The last shard to finish merges by itself; run this after shards that were stopped and
finished by hand, or to rebuild the tables. The tables equal a single-process run's.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the ``merge`` subcommand."""
    p = subparsers.add_parser(
        "merge", help="build the tables of a sharded or Ray attribution run from its records",
        description="Collect the per-example records of DIR (written by `mechit attribute --shard I/N` or "
                    "`--ray`) into attribution_examples/attribution_tokens, as a single-process run writes them.",
    )
    p.add_argument("dir", metavar="DIR", help="output directory of the run")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                   help="table format, as the run's `mechit attribute --format` (default parquet)")
    p.set_defaults(run=run_merge)


def run_merge(args) -> int:
    """Merge and print a one-line summary; exit 1 when some examples failed (as `mechit attribute`)."""
    from mechit.distributed import merge

    summary = merge(args.dir, args.format)
    print(f"merge: {summary['done']} done, {summary['failed']} failed, {summary['empty']} empty responses; "
          f"tables in {args.dir}", file=sys.stderr)
    return 1 if summary["failed"] else 0
