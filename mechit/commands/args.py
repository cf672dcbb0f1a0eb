"""Argument parsing shared by the subcommands: model loading options (device, dtype, several
GPUs, memory cap, remote code), index lists.

This module imports no torch, so ``mechit --help`` stays fast.

>>> parse_indices("0,2,5-7", "--layers")
[0, 2, 5, 6, 7]
"""

from __future__ import annotations

import argparse

from mechit.errors import InputError

MODEL_SPEC_HELP = "hub id, model directory, .gguf file, organism-base or organism-tuned"


def parse_indices(text: str | None, flag: str) -> list[int] | None:
    """``"0,2,5-7"`` -> ``[0, 2, 5, 6, 7]``; None -> None (all). A descending range is an error.

    >>> parse_indices("3-1", "--layers")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --layers '3-1': range 3-1 is empty (write the smaller index first, e.g. 1-3)
    >>> parse_indices("a", "--heads")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --heads 'a': use comma-separated indices and ranges, e.g. 0,2,5-7
    """
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise InputError(f"{flag} {text!r}: use comma-separated indices and ranges, e.g. 0,2,5-7") from None
        if last < first:
            raise InputError(f"{flag} {text!r}: range {part.strip()} is empty (write the smaller index first, "
                             f"e.g. {last}-{first})")
        out.extend(range(first, last + 1))
    return out


DTYPE_CHOICES = ["auto", "float32", "bfloat16", "float16"]


def add_loading_options(parser: argparse.ArgumentParser, *, what: str = "the model") -> None:
    """Options of every command that loads a model: ``--device``, ``--dtype``, ``--device-map``,
    ``--max-memory`` and ``--trust-remote-code`` (read back with :func:`loading_kwargs`).

    >>> parser = argparse.ArgumentParser()
    >>> add_loading_options(parser)
    >>> args = parser.parse_args(["--trust-remote-code", "--dtype", "bfloat16"])
    >>> args.trust_remote_code, args.dtype, args.device
    (True, 'bfloat16', 'auto')
    """
    parser.add_argument("--device", default="auto",
                        help=f"device for {what}: auto (CUDA when there is one, else cpu), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="weight dtype: auto = the checkpoint's own dtype on a GPU, float32 on the CPU")
    parser.add_argument("--device-map", metavar="MAP",
                        help="spread the model over several GPUs through accelerate (e.g. auto, balanced); "
                             "replaces --device")
    parser.add_argument("--max-memory", dest="max_memory_mb", type=int, default=None, metavar="MB",
                        help="memory cap: the weights must fit under it before anything loads (default: the "
                             "device's free memory); `mechit attribute` also caps one example's attribution "
                             "(forward-pass activations plus one chunk of gradient products) at it")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help=f"allow {what}'s own Python code (transformers trust_remote_code); "
                             "only for models you trust")


def add_stream_option(parser: argparse.ArgumentParser) -> None:
    """``--stream``, for commands that read only weights (heads, ffn): read each layer's
    tensors from the checkpoint when needed instead of loading the model; without it they
    stream anyway when the memory plan says the model does not fit.

    >>> parser = argparse.ArgumentParser()
    >>> add_stream_option(parser)
    >>> parser.parse_args(["--stream"]).stream
    True
    """
    parser.add_argument("--stream", action="store_true",
                        help="read weights layer by layer from the safetensors checkpoint instead of loading the "
                             "model (automatic when the model does not fit in memory)")


def loading_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`mechit.models.load_model` the loading options ask for.

    >>> parser = argparse.ArgumentParser()
    >>> add_loading_options(parser)
    >>> loading_kwargs(parser.parse_args(["--device-map", "auto", "--max-memory", "2"]))
    {'device': 'auto', 'dtype': 'auto', 'device_map': 'auto', 'max_memory': 2097152, 'trust_remote_code': False}
    """
    if args.max_memory_mb is not None and args.max_memory_mb < 1:
        raise InputError(f"--max-memory {args.max_memory_mb}: must be at least 1 (MB)")
    return {"device": args.device, "dtype": args.dtype, "device_map": args.device_map,
            "max_memory": None if args.max_memory_mb is None else args.max_memory_mb * 2**20,
            "trust_remote_code": args.trust_remote_code}
