"""``mechit attribute`` (dataset runs of gradient × input attribution) and ``mechit attribute-stats``.

    mechit attribute --model BASE --model TUNED --prompts prompts.jsonl --out runs/attr
    mechit attribute-stats runs/attr

Give the pre-trained model first and the tuned one second: ``attribute-stats`` compares
the second with the first unless ``--base``/``--tuned`` say otherwise.
"""

from __future__ import annotations

import sys

from mechit.commands.args import (
    MAX_LEVELS,
    add_loading_options,
    check_levels,
    finite_float,
    int_in,
    loading_kwargs,
    non_negative_int,
    positive_int,
)
from mechit.commands.distributed_options import (
    add_distributed_options,
    distributed_runner,
)

MAX_BOOT = 1_000_000  # resamples: n_boot x n indices are drawn at once


def register(subparsers) -> None:
    """Add the ``attribute`` and ``attribute-stats`` subcommands."""
    p = subparsers.add_parser(
        "attribute", help="gradient x input attribution of responses to prompts, over a prompt set",
        description="Attribute every example of a prompt set (JSONL or the paper's TSV) under each model; "
                    "resumable; writes attribution_examples/attribution_tokens tables and raw safetensors.",
    )
    p.add_argument("--model", action="append", required=True, metavar="SPEC",
                   help="model spec (hub id, HF dir, .gguf, organism-base/-tuned); repeat for several")
    p.add_argument("--prompts", required=True, metavar="FILE", help="prompt set: .jsonl, or .tsv (paper format)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (a rerun resumes)")
    p.add_argument("--response", choices=["reference", "generate"], default="reference",
                   help="use each example's response (generate where it is null), or always generate greedily")
    p.add_argument("--prompt-format", choices=["auto", "jsonl", "tsv"], default="auto")
    p.add_argument("--spans", choices=["authors", "literal"], default="authors",
                   help="paper TSV: the authors' sentence spans and groups (default), or the literal pieces")
    p.add_argument("--span-units", choices=["characters", "bytes"], default="characters",
                   help="JSONL instruction_spans count code points (default) or UTF-8 bytes of the prompt")
    p.add_argument("--ratings", metavar="FILE", help="the paper's ratings file: labels followed / not followed "
                                                     "(ratings <= 0 dropped, 1 not followed, >= 2 followed)")
    p.add_argument("--ratings-model", metavar="NAME", help="its Model name for the (single) --model "
                                                           "(default: the --model spec)")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="table format")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="length limit of generated responses")
    p.add_argument("--method", choices=["auto", "reverse", "forward"], default="auto")
    add_loading_options(p)
    add_distributed_options(p)
    p.add_argument("--memory-budget-mb", type=positive_int, default=128, metavar="MB",  # mechit.attribution.grad.DEFAULT_MEMORY_BUDGET
                   help="memory for one chunk of batched gradient products and the cotangents carried with "
                        "them (more: faster, up to a point)")
    p.add_argument("-L", type=int_in(1, MAX_LEVELS), default=10, help="number of levels (paper: 10)")
    p.add_argument("-b", type=non_negative_int, default=7, help="levels <= b are dropped (paper: 7)")
    p.add_argument("-p", type=finite_float(min=1), default=4, help="density norm, at least 1 (paper: 4)")
    p.set_defaults(run=run_attribute)

    s = subparsers.add_parser(
        "attribute-stats", help="tuned vs base and followed vs not-followed tests on an attribute run",
        description="Welch one-sided t-tests, mean differences, bootstrap 95%% intervals and n, per group.",
    )
    s.add_argument("dir", metavar="DIR", help="output directory of `mechit attribute`")
    s.add_argument("--base", metavar="SPEC", help="base model spec (default: the first --model of the run)")
    s.add_argument("--tuned", metavar="SPEC", help="tuned model spec (default: the second --model of the run)")
    s.add_argument("--n-boot", type=int_in(1, MAX_BOOT), default=10_000, help="bootstrap resamples")
    s.set_defaults(run=run_stats)


def run_attribute(args) -> int:
    """Run the dataset attribution and print a summary of failures."""
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    import functools
    from pathlib import Path

    from mechit.attribution.dataset import (
        attribute_dataset,
        run_summary,
        write_dataset_tables,
    )
    from mechit.data.prompts import read_prompts
    from mechit.errors import InputError
    from mechit.models import load_model
    from mechit.outdir import check_out_dir

    check_levels(args.L, args.b, args.p)
    check_out_dir(args.out, create=False)
    capped = {} if args.max_memory_mb is None else {"max_memory": args.max_memory_mb * 2**20}
    other = "csv" if args.format == "parquet" else "parquet"
    if (Path(args.out) / f"attribution_examples.{other}").exists():
        raise InputError(f"{args.out} holds {other} tables of another run; use --format {other} or another --out")
    records = read_prompts(args.prompts, format=args.prompt_format, spans=args.spans, span_units=args.span_units)
    if args.ratings:
        from mechit.data.ratings import label_records, ratings_of, read_ratings

        if len(args.model) != 1:
            raise InputError("--ratings labels one model's responses: give one --model per run")
        records = label_records(records, ratings_of(read_ratings(args.ratings), args.ratings_model or args.model[0]))
    run = dict(response=args.response, chat_template=args.chat_template, max_new_tokens=args.max_new_tokens,
               L=args.L, b=args.b, p=args.p, method=args.method, memory_budget=args.memory_budget_mb * 2**20,
               loader=functools.partial(load_model, **loading_kwargs(args)), **capped)
    runner = distributed_runner(args)
    if runner is None:  # one process
        examples, tokens = attribute_dataset(args.model, records, args.out, **run)
        write_dataset_tables(examples, tokens, args.out, args.format)
        summary = run_summary(examples)
    else:  # a shard, or Ray actors: they write the records and, once complete, the tables
        summary = runner(args.model, records, args.out, table_format=args.format, **run)
    where = (f"{summary['pending']} records pending in other shards (the last shard writes the tables)"
             if summary.get("pending") else f"tables in {args.out}")
    print(f"attribute: {len(records)} examples x {len(args.model)} models: "
          f"{summary['done']} done, {summary['failed']} failed, {summary['empty']} empty responses; "
          f"{where}", file=sys.stderr)
    if summary["empty"]:
        shown = ", ".join(f"[{model}] {example_id}" for model, example_id in summary["empty_responses"][:10])
        print(f"  empty responses (kept with status 'empty_response', no score; statistics leave them out): "
              f"{shown}{' ...' if summary['empty'] > 10 else ''}", file=sys.stderr)
    for model, example_id, error in summary["failures"][:20]:
        print(f"  failed [{model}] {example_id}: {error}", file=sys.stderr)
    if summary["failed"] > 20:
        print(f"  ... and {summary['failed'] - 20} more (column 'error' of attribution_examples)", file=sys.stderr)
    return 1 if summary["failed"] else 0  # tables are written either way; 1 tells scripts some examples failed


def run_stats(args) -> int:
    """Compute and write DIR/attribution_stats.(parquet|csv), and print it."""
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    import pandas as pd

    from mechit.attribution.run_stats import read_run, stats_of_run
    from mechit.outdir import check_out_dir
    from mechit.store import write_table

    out = check_out_dir(args.dir, create=False, option="DIR")  # the stats table is written into the run
    settings, examples, suffix = read_run(out)
    result = stats_of_run(settings, examples, args.base, args.tuned, n_boot=args.n_boot)
    path = write_table(result, out / f"attribution_stats{suffix}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.to_string(index=False) if len(result) else "no comparisons: need two models or labelled examples")
    print(f"written to {path}", file=sys.stderr)
    return 0
