"""Argument parsing shared by the subcommands: number types, model loading options (device,
dtype, several GPUs, memory cap, remote code), index lists.

Every numeric option is parsed by one of the type functions here (:func:`positive_int`,
:func:`non_negative_int`, :func:`int_in`, :func:`finite_float`), so ``nan``, ``inf``, ``0``
or ``-1`` where they make no sense are refused by argparse with one line naming the
option, before anything loads.

This module imports no torch, so ``mechit --help`` stays fast.

>>> parse_indices("0,2,5-7", "--layers")
[0, 2, 5, 6, 7]
"""

from __future__ import annotations

import argparse
import math

from mechit.errors import InputError

MAX_LEVELS = 2**24  # levels are integers held exactly in float32
MAX_LEVEL_POWER = 30.0  # -L ** -p stays below 1e30: a density row sums m such powers in float32 (max 3.4e38)


def int_in(minimum: int, maximum: int | None = None):
    """An argparse type: an integer in ``minimum..maximum`` (no upper bound when None).

    >>> int_in(1, 10)("3")
    3
    >>> int_in(1, 10)("11")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer from 1 to 10, not '11'
    """
    what = f"an integer of at least {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


positive_int = int_in(1)
"""An argparse type: an integer of at least 1.

>>> positive_int("0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: must be an integer of at least 1, not '0'
"""

non_negative_int = int_in(0)
"""An argparse type: an integer of at least 0.

>>> non_negative_int("-1")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: must be an integer of at least 0, not '-1'
"""


def finite_float(min: float | None = None, *, above: float | None = None, max: float | None = None):
    """An argparse type: a finite number (never ``nan`` or ``inf``), ``>= min``, ``> above``, ``<= max``.

    >>> finite_float(min=1)("4")
    4.0
    >>> finite_float(min=1)("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite number of at least 1, not 'nan'
    >>> finite_float(above=0)("1e-400")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite number above 0, not '1e-400'
    """
    bounds = [f"of at least {min:g}" if min is not None else "", f"above {above:g}" if above is not None else "",
              f"at most {max:g}" if max is not None else ""]
    what = " ".join(["a finite number", *[b for b in bounds if b]])

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if (not math.isfinite(value) or (min is not None and value < min) or (above is not None and value <= above)
                or (max is not None and value > max)):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def check_levels(L: int, b: int, p: float) -> None:
    """The paper's constants together: ``0 <= b < L`` and ``L ** p`` below ``1e30`` (else the
    float32 p-norm of a density row overflows and every density reads 0).

    >>> check_levels(10, 7, 4)
    >>> check_levels(1000, 7, 16)
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: -L 1000 with -p 16: L**p = 10^48 overflows float32 densities; keep L**p below 10^30 (paper: L 10, p 4)
    """
    if not (L >= 1 and 0 <= b < L):
        raise InputError(f"-b {b} must be in 0..L-1 (-L {L}); levels <= b are dropped")
    if p * math.log10(L) > MAX_LEVEL_POWER:
        raise InputError(f"-L {L} with -p {p:g}: L**p = 10^{p * math.log10(L):.0f} overflows float32 densities; "
                         f"keep L**p below 10^{MAX_LEVEL_POWER:.0f} (paper: L 10, p 4)")

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
    parser.add_argument("--max-memory", dest="max_memory_mb", type=positive_int, default=None, metavar="MB",
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
    return {"device": args.device, "dtype": args.dtype, "device_map": args.device_map,
            "max_memory": None if args.max_memory_mb is None else args.max_memory_mb * 2**20,
            "trust_remote_code": args.trust_remote_code}
