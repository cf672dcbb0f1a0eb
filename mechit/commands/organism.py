"""``mechit organism train|eval``: rebuild the embedded model pair, or measure it."""

from __future__ import annotations

import argparse
import json

from mechit.commands.args import positive_int


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {text!r}")
    return value


def register(subparsers) -> None:
    """Add ``organism`` with its ``train`` and ``eval`` subcommands."""
    parser = subparsers.add_parser("organism", help="train or evaluate the embedded model pair",
                                   description="The embedded base/tuned pair (docs/organism.md).")
    sub = parser.add_subparsers(dest="organism_command", required=True, metavar="ACTION")

    train = sub.add_parser("train", help="train base and tuned from nothing (about 20 min on 2 cores)")
    train.add_argument("--out", default="organism-run", help="output directory (default: organism-run)")
    train.add_argument("--seed", type=_seed, default=0, help="seed of data, init and order (default 0)")
    train.add_argument("--force", action="store_true", help="delete a non-empty --out and start over")
    train.add_argument("--preset", choices=["full", "tiny"], default="full",
                       help="full: the shipped recipe; tiny: a seconds-long smoke run")
    train.set_defaults(run=_train)

    ev = sub.add_parser("eval", help="held-out task scores and LM loss of base and tuned")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--weights", default=None, help="a directory written by `organism train` "
                    "(default: the shipped pair)")
    ev.add_argument("--per-task", type=positive_int, default=None, help="evaluate only N prompts per task")
    ev.set_defaults(run=_eval)


def _train(args) -> int:
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    from mechit.organism.train import TrainConfig, train
    from mechit.outdir import check_out_dir

    check_out_dir(args.out, create=False)
    summary = train(args.out, TrainConfig.preset(args.preset, seed=args.seed), force=args.force)
    print(f"trained in {summary['train_seconds']:.0f} s; final losses: base "
          f"{summary['final_loss']['base']:.4f}, tuned {summary['final_loss']['tuned']:.4f}; "
          f"written to {args.out}")
    return 0


def _eval(args) -> int:
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    from mechit.organism.evaluate import evaluate

    record = evaluate(args.weights, per_task=args.per_task)
    if args.json:
        print(json.dumps(record))
        return 0
    tasks = list(record["tuned"]["accuracy"])
    print(f"{'task':<12}{'base':>8}{'tuned':>8}")
    for t in tasks:
        print(f"{t:<12}{record['base']['accuracy'][t]:>8.2f}{record['tuned']['accuracy'][t]:>8.2f}")
    print(f"{'mean':<12}{record['base']['mean_accuracy']:>8.2f}{record['tuned']['mean_accuracy']:>8.2f}")
    for t in record["tuned"]["open_score"]:
        print(f"{t:<12}{record['base']['open_score'][t]:>8.2f}{record['tuned']['open_score'][t]:>8.2f}")
    print(f"{'open mean':<12}{record['base']['mean_open_score']:>8.2f}{record['tuned']['mean_open_score']:>8.2f}")
    print(f"{'lm_loss':<12}{record['base']['lm_loss']:>8.3f}{record['tuned']['lm_loss']:>8.3f}")
    print(f"{record['n_eval']} held-out prompts per model ({record['long_response_share']:.0%} with a reference of "
          f"15 tokens or more); exact match above 'mean', open-task checks below; training seed {record['seed']}")
    return 0
