"""Argument parsing shared by the subcommands: model loading options, index lists.

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


def add_loading_options(parser: argparse.ArgumentParser, *, what: str = "the model") -> None:
    """Options of every command that loads a model (``--trust-remote-code``).

    >>> parser = argparse.ArgumentParser()
    >>> add_loading_options(parser)
    >>> parser.parse_args(["--trust-remote-code"]).trust_remote_code
    True
    """
    parser.add_argument("--trust-remote-code", action="store_true",
                        help=f"allow {what}'s own Python code (transformers trust_remote_code); "
                             "only for models you trust")
