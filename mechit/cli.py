"""The ``mechit`` command.

Each subcommand lives in its own module under :mod:`mechit.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``run`` (a function of the
parsed arguments returning an exit code). Command modules import torch and the
analyses inside ``run``, so ``mechit --help`` stays fast.

A :class:`~mechit.errors.MechitError` is printed as one line on stderr with exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mechit.errors import MechitError

COMMAND_MODULES = [
    "info",
    "attribute",
    "attribute_import",
    "merge",
    "organism",
    "compare",
    "heads",
    "ffn",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="mechit",
        description="What instruction tuning changes inside a language model.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mechit.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mechit`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MechitError as error:
        if args.debug:
            raise
        print(f"mechit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mechit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
