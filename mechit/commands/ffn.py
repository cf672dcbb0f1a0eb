"""``mechit ffn``, ``mechit ffn-rotation`` and ``mechit ffn-labels``: the feed-forward analyses.

::

    $ mechit ffn --model organism-tuned --out runs/ffn-tuned            # concepts + neuron tables
    $ mechit ffn-rotation --base organism-base --tuned organism-tuned --out runs/ffn-pair
    $ mechit ffn-labels runs/ffn-pair                                   # offline labels, Table 5
    $ mechit ffn-labels runs/ffn-pair --labeller endpoint --url http://127.0.0.1:8000/v1 \\
          --endpoint-model qwen2.5-7b-instruct --seeds 5
    $ mechit ffn-labels --check-set --labeller lexicon --json           # a labeller's accuracy

``ffn-rotation`` also writes each model's concepts (``base/``, ``tuned/``), so
``ffn-labels`` can compare label proportions between the two. ``ffn-labels --check-set``
labels the check set of :mod:`mechit.ffn.checkset` instead; with ``--json`` its last line
is ``{"labeller": ..., "task_accuracy": ..., "task_macro_f1": ..., "level_accuracy": ...,
"level_macro_f1": ...}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mechit.commands.args import (
    MODEL_SPEC_HELP,
    add_loading_options,
    add_stream_option,
    finite_float,
    loading_kwargs,
    non_negative_int,
    parse_indices,
    positive_int,
)
from mechit.errors import InputError

# torch, the models and the analyses are imported inside the run_* functions: they keep `mechit --help` fast.

DEFAULT_COMPONENTS = 300
CHECK_KEYS = ("labeller", "task_accuracy", "task_macro_f1", "level_accuracy", "level_macro_f1")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--layers", help="layers, e.g. 0,2,5-7 (default: all)")
    parser.add_argument("--n-components", type=positive_int, default=None,
                        help=f"principal components per layer (default: {DEFAULT_COMPONENTS}, or the rank if smaller)")
    parser.add_argument("--top-k", type=positive_int, default=50, help="words per concept (default 50)")
    parser.add_argument("--words", help="word list file, one word per line (default: 26,500 frequent English "
                        "words with the instruction and general verbs, or the organism's vocabulary and the verbs its "
                        "tokenizer knows for the organism)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ffn", help="FFN concepts (principal components of W_out) and neuron tables of one model",
        description="Per layer: principal-component concepts of W_out (PAPER §3.1-3.2) and the top and "
        "bottom words of the strongest neurons. Writes concepts.parquet, neurons.parquet, meta.json.",
    )
    p.add_argument("--model", required=True, help="hub id, model directory, .gguf file, organism-base or organism-tuned")
    add_loading_options(p)
    add_stream_option(p)
    _common(p)
    p.add_argument("--neurons", default="32",
                   help="neurons per layer for the neuron table: N strongest by |W_out row| (default 32) or 'all'")
    p.add_argument("--neuron-k", type=positive_int, default=20, help="words per neuron and direction (default 20)")
    p.set_defaults(run=run_ffn)

    p = subparsers.add_parser(
        "ffn-rotation", help="how far tuning rotated each FFN layer (base vs tuned)",
        description="Principal angles between base and tuned top-k W_out component subspaces, per-neuron "
        "cosines of W_out rows and W_in columns, Hungarian-matched components with concept overlap, "
        "most-changed neurons; also each model's concepts (base/, tuned/) for ffn-labels. "
        "Without --base/--tuned: the embedded organism pair.",
    )
    p.add_argument("--base", help="pre-trained model spec (default: organism-base)")
    add_loading_options(p)
    p.add_argument("--tuned", help="instruction-tuned model spec (default: organism-tuned)")
    _common(p)
    p.add_argument("--k", type=positive_int, default=50, help="components compared per layer (default 50)")
    p.add_argument("--n-changed", type=non_negative_int, default=10, help="most-changed neurons listed per layer (default 10)")
    p.set_defaults(run=run_rotation)

    p = subparsers.add_parser(
        "ffn-labels", help="label FFN concepts (task, linguistic level) and compare proportions; "
        "or, with --check-set, measure a labeller",
        description="Label the concepts written by `mechit ffn` (DIR/concepts.parquet) or `mechit ffn-rotation` "
        "(DIR/base/, DIR/tuned/) and write labels.parquet, label_proportions.parquet, label_table.csv and "
        "label_table_groups.csv (base vs tuned, all layers / per layer group, t-test across seeds) and figures. "
        "With --check-set (no DIR): label the check set of known answers and print accuracy and macro-F1 "
        "per question.",
    )
    p.add_argument("dir", type=Path, nargs="?", help="output directory of `mechit ffn` or `mechit ffn-rotation`")
    p.add_argument("--check-set", action="store_true",
                   help="label the check set (concepts of known task and level) instead of DIR and print the scores")
    p.add_argument("--split", choices=["test", "calibration"], default="test",
                   help="--check-set: which half of the check set (default test)")
    p.add_argument("--per-label", type=positive_int, default=None,
                   help="--check-set: only the first N concepts of each true label (for slow labellers)")
    p.add_argument("--json", action="store_true", help="--check-set: end with one JSON line of the scores")
    p.add_argument("--labeller", choices=["embedding", "lexicon", "endpoint", "local"], default="embedding",
                   help="embedding (offline default: MiniLM similarity + lexicon rules), lexicon (offline baseline), "
                   "endpoint (OpenAI-compatible server) or local (a model mechit loads)")
    p.add_argument("--foreign-words", metavar="organism|FILE",
                   help="words the offline labellers count as translation: 'organism' (the organism's second "
                   "language) or a word-list file (default: none)")
    p.add_argument("--url", help="endpoint base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--endpoint-model", help="model name sent to the endpoint")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--timeout", type=finite_float(above=0), default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=non_negative_int, default=3, help="retries per label (default 3)")
    p.add_argument("--local-model", help=f"model for --labeller local: {MODEL_SPEC_HELP}")
    add_loading_options(p, what="the --local-model")
    p.add_argument("--seeds", type=positive_int, default=5,
                   help="labelling seeds (default 5, as the paper); for the offline labellers, seeds > 0 "
                   "label bootstrap resamples of each word list")
    p.add_argument("--max-components", type=positive_int, default=None, help="label only the first N components per layer")
    p.add_argument("--group-size", type=positive_int, default=4, help="layers per layer group (default 4, as the paper)")
    p.add_argument("--cache", type=Path, help="label cache file (default DIR/labels_cache.jsonl)")
    p.set_defaults(run=run_labels)


def _n_components(model, args: argparse.Namespace) -> int:
    """``--n-components``, else min(300, d_mlp - 1, d_model), raised to ``--k`` for ffn-rotation
    (the rotation reads the words of its ``k`` components from the concepts)."""
    if args.n_components is not None:
        return args.n_components
    return max(min(DEFAULT_COMPONENTS, model.cfg.d_mlp - 1, model.cfg.d_model), getattr(args, "k", 0))


def _check_args(args: argparse.Namespace) -> None:
    """Model-free checks of the arguments, run before any model is loaded."""
    parse_indices(args.layers, "--layers")
    neurons = getattr(args, "neurons", "all")
    if neurons != "all":
        try:
            count = int(neurons)
        except ValueError:
            raise InputError(f"--neurons {neurons!r}: give a number or 'all'") from None
        if count < 1:  # the other numbers are checked by their argparse types (commands/args.py)
            raise InputError(f"--neurons {count}: must be at least 1")
    k, n_components = getattr(args, "k", None), args.n_components
    if k is not None and n_components is not None and n_components < k:
        raise InputError(f"--n-components {n_components} is below --k {k}: the rotation compares the concepts "
                         f"of k components, so give --n-components {k} or more")


def _check_against(model, args: argparse.Namespace, words) -> None:
    """Checks of the arguments against the loaded model, run before any heavy work.

    Layers must lie in ``0..n_layers-1``, ``--neurons N`` at most ``d_mlp``, ``--n-components``
    and ``--k`` at most ``min(d_mlp - 1, d_model)`` (the rank bound of the centred ``W_out``;
    a layer of lower numerical rank is still refused by the PCA), and ``--top-k`` at most
    the number of words given.
    """
    from mechit.arch.weights import select_indices

    select_indices("layer", parse_indices(args.layers, "--layers"), int(model.cfg.n_layers), from_end=True)
    d_mlp, d_model = int(model.cfg.d_mlp), int(model.cfg.d_model)
    neurons = getattr(args, "neurons", "all")
    if neurons != "all" and int(neurons) > d_mlp:
        raise InputError(f"--neurons {neurons}: the model has {d_mlp} neurons per layer (d_mlp); "
                         f"give at most {d_mlp} or 'all'")
    bound = min(d_mlp - 1, d_model)
    for flag in ("n_components", "k"):
        value = getattr(args, flag, None)
        if value is not None and value > bound:
            raise InputError(f"--{flag.replace('_', '-')} {value} exceeds the rank bound min(d_mlp - 1, d_model) "
                             f"= {bound} of the centred W_out; give at most {bound}")
    if words is not None and args.top_k > len(words):
        raise InputError(f"--top-k {args.top_k} exceeds the number of words in {args.words} ({len(words)})")


def _words(path: str | None):
    from mechit.data.wordlists import read_words

    return read_words(path) if path else None


def _concepts(model, args, words):
    from mechit.ffn.concepts import ffn_concepts

    return ffn_concepts(model, parse_indices(args.layers, "--layers"), n_components=_n_components(model, args),
                        top_k=args.top_k, words=words)


def run_ffn(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from mechit.arch.weights import mlp_out_weights, select_indices
    from mechit.ffn.neurons import neuron_tokens
    from mechit.models import open_for_weights
    from mechit.outdir import check_out_dir
    from mechit.store import remove_stale_temporaries, write_json, write_table

    _check_args(args)
    words = _words(args.words)
    check_out_dir(args.out, create=False)
    remove_stale_temporaries(args.out)
    model = open_for_weights(args.model, stream=args.stream, **loading_kwargs(args))
    _check_against(model, args, words)
    concepts = _concepts(model, args, words)
    write_table(concepts, args.out / "concepts.parquet")
    tables = []
    layers = select_indices("layer", parse_indices(args.layers, "--layers"), int(model.cfg.n_layers), from_end=True)
    for layer in tqdm(layers, desc="neurons", unit="layer"):
        if args.neurons == "all":
            chosen = None
        else:
            norms = mlp_out_weights(model, layer).norm(dim=1)
            chosen = torch.topk(norms, int(args.neurons)).indices.sort().values.tolist()
        tables.append(neuron_tokens(model, layer, chosen, k=args.neuron_k))
    neurons = pd.concat(tables, ignore_index=True)
    write_table(neurons, args.out / "neurons.parquet")
    write_json(args.out / "meta.json", {"model": args.model, "layers": args.layers, "top_k": args.top_k,
                                        "n_components": _n_components(model, args),
                                        "words": args.words, "neurons": args.neurons})
    print(f"{len(concepts)} concept rows -> {args.out / 'concepts.parquet'}; "
          f"{int(neurons.groupby('layer')['neuron'].nunique().max())} neurons per layer -> {args.out / 'neurons.parquet'}")
    return 0


def run_rotation(args: argparse.Namespace) -> int:
    from mechit.ffn.rotation import ffn_rotation
    from mechit.models.pair import load_pair
    from mechit.outdir import check_out_dir
    from mechit.store import remove_stale_temporaries, write_json, write_table
    from mechit.views.ffn import plot_neuron_cosines, plot_principal_angles, save_figure

    _check_args(args)
    words = _words(args.words)
    check_out_dir(args.out, create=False)
    remove_stale_temporaries(args.out)
    pair = load_pair(args.base, args.tuned, **loading_kwargs(args))
    _check_against(pair.base, args, words)
    concepts = pair.run(_concepts, args, words)
    rotation = ffn_rotation(pair, concepts, parse_indices(args.layers, "--layers"), k=args.k, n_changed=args.n_changed)
    rotation.save(args.out)
    for name, frame in concepts.groupby("model", sort=False):
        write_table(frame.drop(columns="model").reset_index(drop=True), args.out / name / "concepts.parquet")
    save_figure(plot_principal_angles(rotation), args.out / "principal_angles")
    save_figure(plot_neuron_cosines(rotation), args.out / "neuron_cosines")
    write_json(args.out / "meta.json", {"base": pair.base_spec, "tuned": pair.tuned_spec, "k": args.k,
                                        "top_k": args.top_k, "layers": args.layers, "words": args.words})
    print(rotation.summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"-> {args.out}")
    return 0


def _labeller(args: argparse.Namespace, cache: Path | None):
    """The labeller the arguments name; the offline ones count ``--foreign-words`` as translation."""
    from mechit.ffn.labellers import make_labeller

    if args.labeller == "endpoint":
        if not args.url or not args.endpoint_model:
            raise InputError("--labeller endpoint needs --url and --endpoint-model")
        return make_labeller("endpoint", url=args.url, model=args.endpoint_model, api_key_env=args.api_key_env,
                             timeout=args.timeout, retries=args.retries, cache=cache)
    if args.labeller == "local":
        if not args.local_model:
            raise InputError("--labeller local needs --local-model SPEC")
        return make_labeller("local", model=args.local_model, cache=cache, **loading_kwargs(args))
    foreign = args.foreign_words
    if foreign is not None and foreign != "organism":
        foreign = _words(foreign)
    return make_labeller(args.labeller, foreign_words=foreign or ())


def run_check_set(args: argparse.Namespace) -> int:
    """``ffn-labels --check-set``: the labeller's accuracy and macro-F1 on the check set."""
    from mechit.ffn.labeller_check import check_labeller

    if args.dir is not None:
        raise InputError("--check-set labels the check set, not a directory: leave out DIR")
    result = check_labeller(_labeller(args, args.cache), split=args.split, per_label=args.per_label,
                            progress=not args.json)
    for question in ("task", "level"):
        print(f"{question}: accuracy {result[f'{question}_accuracy']:.3f}, macro-F1 "
              f"{result[f'{question}_macro_f1']:.3f} over {result[f'n_{question}']} concepts; recall "
              + ", ".join(f"{k} {v:.2f}" for k, v in result[f"{question}_recall"].items()))
    if args.json:
        print(json.dumps({k: result[k] for k in CHECK_KEYS}))
    return 0


def run_labels(args: argparse.Namespace) -> int:
    import pandas as pd

    from mechit.ffn.labellers import label_concepts
    from mechit.ffn.labels import label_proportions, label_table
    from mechit.outdir import check_out_dir
    from mechit.store import remove_stale_temporaries, write_table
    from mechit.views.ffn import plot_label_proportions, save_figure

    if args.check_set:
        return run_check_set(args)
    directory = args.dir
    if directory is None:
        raise InputError("ffn-labels needs DIR (the output of `mechit ffn` or `mechit ffn-rotation`), or --check-set")
    if (directory / "base" / "concepts.parquet").exists() and (directory / "tuned" / "concepts.parquet").exists():
        concepts = pd.concat([pd.read_parquet(directory / m / "concepts.parquet").assign(model=m)
                              for m in ("base", "tuned")], ignore_index=True)
    elif (directory / "concepts.parquet").exists():
        concepts = pd.read_parquet(directory / "concepts.parquet")
    else:
        raise InputError(f"{directory}: no concepts.parquet (nor base/ and tuned/): run `mechit ffn` or "
                         "`mechit ffn-rotation` first")
    check_out_dir(directory, create=False)
    remove_stale_temporaries(directory)
    labeller = _labeller(args, args.cache or directory / "labels_cache.jsonl")
    n_seeds = args.seeds
    labels = label_concepts(concepts, labeller, seeds=range(n_seeds), max_components=args.max_components)
    write_table(labels, directory / "labels.parquet")
    props = label_proportions(labels, group_size=args.group_size)
    write_table(props, directory / "label_proportions.parquet")
    for question in ("task", "level"):
        save_figure(plot_label_proportions(props, question, group_size=args.group_size),
                    directory / f"label_proportions_{question}")
    if "model" in labels:
        table = label_table(labels)
        write_table(table, directory / "label_table.csv")
        write_table(label_table(labels, group_size=args.group_size), directory / "label_table_groups.csv")
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"{len(labels)} labels ({labeller.name}, {n_seeds} seed(s)) -> {directory}")
    return 0
