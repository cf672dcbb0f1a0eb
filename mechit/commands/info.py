"""``mechit info SPEC``: load a model and print its architecture summary.

A smoke test for every model source (hub id, directory, .gguf file, organism)::

    $ mechit info SmolLM2-135M-Instruct.Q4_1.gguf
    spec          SmolLM2-135M-Instruct.Q4_1.gguf
    architecture  LlamaForCausalLM
    layers        30
    heads         9
    kv_heads      3
    d_model       576
    ...
"""

from __future__ import annotations

import argparse
import json

from mechit.commands.args import add_loading_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a model's architecture summary",
        description="Load a model (hub id, local directory, .gguf file, organism-base, "
        "organism-tuned) and print layers, heads, KV heads, d_model, d_mlp, vocabulary "
        "size, norm type and whether weights are folded.",
    )
    parser.add_argument("spec", help="hub id, model directory, .gguf file, organism-base or organism-tuned")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_loading_options(parser)
    parser.set_defaults(run=run)


def format_info(info: dict) -> str:
    """Two aligned columns, one line per field.

    >>> print(format_info({"layers": 30, "heads": 9}))
    layers  30
    heads   9
    """
    width = max(len(key) for key in info)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in info.items())


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    from mechit.arch.weights import describe
    from mechit.models import load_model

    info = describe(load_model(args.spec, trust_remote_code=args.trust_remote_code))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
