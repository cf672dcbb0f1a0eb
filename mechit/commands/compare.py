"""``mechit compare``: run every analysis on a pre-trained/tuned pair and write the HTML report.

    mechit compare                                   # the embedded organism pair, its held-out prompts
    mechit compare --base BASE --tuned TUNED --out runs/pair
    mechit compare --out runs/pair --only heads,ffn  # some stages; a rerun skips finished ones
    mechit compare --paper-results OUT               # with the paper's Tables 1-2 from `mechit attribute-import OUT`
    mechit compare --out runs/pair --shard 0/4       # a share of the per-prompt work (docs/distributed.md)
    mechit compare --out runs/pair --ray --workers 2 # the per-prompt work on Ray actors
"""

from __future__ import annotations

import sys

from mechit.commands.args import add_loading_options, loading_kwargs, positive_int
from mechit.commands.distributed_options import (
    add_distributed_options,
    per_prompt_runner,
)
from mechit.data.wordlists import PAPER_VOCABULARY


def register(subparsers) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare", help="what did instruction tuning change? all analyses on a pair, tables and an HTML report",
        description="Attribution (with its causal ablation check), attention heads and FFN concepts on both models of a pair; writes DIR/*.parquet, "
                    "DIR/summary.json and a self-contained DIR/report.html. Resumable: a rerun skips finished "
                    "stages and examples.",
    )
    p.add_argument("--base", metavar="SPEC", help="pre-trained model (hub id, HF dir, .gguf); default: the organism")
    p.add_argument("--tuned", metavar="SPEC", help="instruction-tuned model; default: the organism")
    p.add_argument("--prompts", metavar="FILE",
                   help="prompt set with instruction spans (.jsonl or the paper's .tsv); default: the organism's "
                        "held-out prompts, or mechit's English instruction set for other pairs")
    p.add_argument("--out", metavar="DIR", default="mechit-compare", help="output directory (default: %(default)s)")
    p.add_argument("--only", metavar="STAGES", help="comma-separated stages: attribution,faithfulness,heads,ffn (default: all; faithfulness needs attribution)")
    p.add_argument("--response", choices=["generate", "reference"], default="generate",
                   help="attribute each model's own greedy response (default), or the prompts' reference responses "
                        "(the same text for both models; generated where a prompt has none)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, help="length limit of generated responses")
    p.add_argument("--labeller", choices=["embedding", "lexicon"], default="embedding",
                   help="offline FFN concept labeller: embedding (MiniLM + lexicon rules; default) or lexicon "
                        "(the baseline; needs no MiniLM); its check-set accuracy is reported with Finding 3")
    p.add_argument("--ablation", choices=["remove", "mask", "mean"], default="remove",
                   help="how the faithfulness stage ablates the instruction or the context (default: %(default)s)")
    p.add_argument("--words", type=positive_int, default=PAPER_VOCABULARY, metavar="N",
                   help="frequent English words for heads and FFN (non-organism pairs), with the 38 instruction "
                        "verbs and 3000 general verbs always added; head K in the paper's ratio, 100 per 26,500 "
                        "words (default: %(default)s, as the paper)")
    p.add_argument("--paper-results", metavar="DIR",
                   help="an attribution run of the authors' released results (`mechit attribute-import`): its "
                        "statistics become the report's section on the paper's Tables 1-2")
    p.add_argument("--no-report", action="store_true", help="write tables and summary.json only")
    add_loading_options(p)
    add_distributed_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    """Run the comparison and print where the report is."""
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    from mechit.pipeline.run import Options, compare

    options = Options(max_new_tokens=args.max_new_tokens, n_words=args.words, response=args.response,
                      ablation=args.ablation, labeller=args.labeller)
    runner, pending = per_prompt_runner(args), []

    def per_prompt(job) -> int:
        pending.append(runner(job))
        return pending[-1]

    path = compare(args.base, args.tuned, prompts=args.prompts, out=args.out, only=args.only, options=options,
                   report=not args.no_report, paper_results=args.paper_results, per_prompt=per_prompt if runner else None, **loading_kwargs(args))
    if pending and pending[-1]:
        print(f"compare: {pending[-1]} examples still miss per-prompt records (other shards); the last shard "
              f"to finish builds the tables and the report in {path}", file=sys.stderr)
        return 0
    print(f"report: {path}" if path.suffix == ".html" else f"tables: {path}", file=sys.stdout)
    return 0
