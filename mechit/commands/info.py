"""``mechit info SPEC``: a model's shape and memory plan, read from its config without loading weights.

It reads ``config.json`` and the safetensors headers of a directory (or the header of a
GGUF file), so it answers in seconds for a 70B checkpoint, or for a directory holding
only ``config.json``::

    $ mechit info llama-2-70b/
    spec              llama-2-70b/
    architecture      LlamaForCausalLM
    layers            80
    ...
    parameters        68,976,648,192
    weights float32   256.96 GiB
    weights bfloat16  128.48 GiB
    ...

``--load`` also loads the model (a smoke test for every model source) and adds what
the loaded bridge reports.
"""

from __future__ import annotations

import argparse
import json

from mechit.commands.args import add_loading_options, loading_kwargs, positive_int

GIB = 2**30


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a model's architecture and memory plan (without loading weights)",
        description="Read a model's config (hub id in the cache, local directory, .gguf file, organism-base, "
        "organism-tuned) and print layers, heads, KV heads, d_model, d_mlp, vocabulary size, norm type, the "
        "parameter count, the weight memory per dtype and the activation memory of one attribution.",
    )
    parser.add_argument("spec", help="hub id, model directory, .gguf file, organism-base or organism-tuned")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--length", type=positive_int, default=512, metavar="TOKENS",
                        help="sequence length for the attribution memory estimate (default: %(default)s)")
    parser.add_argument("--load", action="store_true", help="also load the model and report what the bridge says")
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


def plan_info(plan, length: int) -> dict:
    """What ``mechit info`` prints for a :class:`~mechit.models.ModelPlan`: its summary, the
    weight memory in each dtype (GiB) and the activations one attribution of ``length``
    tokens keeps (the whole forward graph, and the block-by-block path; float32, in GiB).

    >>> from mechit.models import read_plan
    >>> info = plan_info(read_plan("organism-tuned"), 64)
    >>> info["parameters"], info["weights float32 GiB"] == round(4 * 2331680 / 2**30, 3)
    (2331680, True)
    """
    import torch

    from mechit.attribution.grad import block_path_bytes, forward_bytes

    info = plan.summary()
    for dtype in (torch.float32, torch.bfloat16):
        info[f"weights {str(dtype).removeprefix('torch.')} GiB"] = round(plan.weight_bytes(dtype) / GIB, 3)
    info[f"attribution forward graph GiB at {length} tokens"] = round(forward_bytes(plan, length, length) / GIB, 3)
    info[f"attribution block path GiB at {length} tokens"] = round(block_path_bytes(plan, length, length) / GIB, 3)
    return info


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `mechit --help` stays fast (no torch)
    from mechit.errors import SpecError
    from mechit.models import read_plan

    try:
        info = plan_info(read_plan(args.spec), args.length)
    except SpecError:
        if not args.load:
            raise
        info = {}  # loading reports the problem in its own words
    if args.load:
        from mechit.arch.weights import describe
        from mechit.models import load_model

        info.update(describe(load_model(args.spec, **loading_kwargs(args))))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
