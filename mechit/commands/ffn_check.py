"""``mechit ffn-labels-check``: a concept labeller's accuracy on the check set.

::

    $ mechit ffn-labels-check --labeller embedding --json
    $ mechit ffn-labels-check --labeller local --local-model model.gguf --per-label 2 --json

Prints accuracy and macro-F1 per question on the check set's test split
(:mod:`mechit.ffn.checkset`); with ``--json`` the last line is one JSON object:
``{"labeller": ..., "task_accuracy": ..., "task_macro_f1": ..., "level_accuracy": ..., "level_macro_f1": ...}``.
"""

from __future__ import annotations

import argparse
import json

from mechit.commands.args import MODEL_SPEC_HELP, add_loading_options, positive_int

KEYS = ("labeller", "task_accuracy", "task_macro_f1", "level_accuracy", "level_macro_f1")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ffn-labels-check", help="accuracy of a concept labeller on the check set of known answers",
        description="Label the check set's concepts (known task and level by construction) and print "
        "accuracy and macro-F1 per question.",
    )
    p.add_argument("--labeller", choices=["embedding", "lexicon", "local", "endpoint"], default="embedding",
                   help="embedding (offline, MiniLM + lexicon rules; default), lexicon, local or endpoint")
    p.add_argument("--split", choices=["test", "calibration"], default="test", help="check-set half (default test)")
    p.add_argument("--per-label", type=positive_int, default=None, help="first N concepts of each true label (for slow labellers)")
    p.add_argument("--url", help="endpoint base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--endpoint-model", help="model name sent to the endpoint")
    p.add_argument("--local-model", help=f"model for --labeller local: {MODEL_SPEC_HELP}")
    add_loading_options(p, what="the --local-model")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the scores")
    p.set_defaults(run=run_check)


def build_labeller(args: argparse.Namespace):
    """The labeller the arguments name (no organism words: the check set has none)."""
    from mechit.errors import InputError
    from mechit.ffn.embedding_labeller import EmbeddingLabeller
    from mechit.ffn.labels import make_labeller
    from mechit.heads.similarity import MiniLMSimilarity

    if args.labeller == "embedding":
        source = MiniLMSimilarity(cache_dir=False)
        return EmbeddingLabeller(source, source._load()[1].tokenize)
    if args.labeller == "lexicon":
        return make_labeller("lexicon", foreign_words=())
    if args.labeller == "endpoint":
        if not args.url or not args.endpoint_model:
            raise InputError("--labeller endpoint needs --url and --endpoint-model")
        return make_labeller("endpoint", url=args.url, model=args.endpoint_model)
    if not args.local_model:
        raise InputError("--labeller local needs --local-model")
    return make_labeller("local", model=args.local_model, trust_remote_code=args.trust_remote_code)


def run_check(args: argparse.Namespace) -> int:
    from mechit.ffn.labeller_check import check_labeller

    result = check_labeller(build_labeller(args), split=args.split, per_label=args.per_label,
                            progress=not args.json)
    for question in ("task", "level"):
        print(f"{question}: accuracy {result[f'{question}_accuracy']:.3f}, macro-F1 "
              f"{result[f'{question}_macro_f1']:.3f} over {result[f'n_{question}']} concepts; recall "
              + ", ".join(f"{k} {v:.2f}" for k, v in result[f"{question}_recall"].items()))
    if args.json:
        print(json.dumps({k: result[k] for k in KEYS}))
    return 0
