"""The ``mechit`` command.

Each subcommand lives in its own module under :mod:`mechit.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``run`` (a function of the
parsed arguments returning an exit code). Command modules import torch and the
analyses inside ``run``, so ``mechit --help`` stays fast.

A :class:`~mechit.errors.MechitError` is printed as one line on stderr with exit code 2;
``--debug`` shows the traceback instead. Ctrl-C (SIGINT) and SIGTERM end a run with one
line and exit codes 130 and 143; what was finished stays on disk and a rerun resumes.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from mechit.errors import InputError, MechitError

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


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (like KeyboardInterrupt for SIGINT)."""


def _raise_terminated(signum, frame):
    raise Terminated


def _check_empty_out(argv: list[str]) -> None:
    """``--out ""`` would write into the current directory: refuse it.

    >>> _check_empty_out(["attribute", "--out", ""])
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --out is empty; name an output directory (--out . for the current one)
    """
    for i, arg in enumerate(argv):
        if arg == "--out=" or (arg == "--out" and i + 1 < len(argv) and not argv[i + 1].strip()):
            raise InputError("--out is empty; name an output directory (--out . for the current one)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mechit`` console script; returns the process exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None  # restored below
    try:
        _check_empty_out(argv)
        return int(args.run(args) or 0)
    except MechitError as error:
        if args.debug:
            raise
        print(f"mechit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mechit: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("mechit: terminated (SIGTERM); finished work is kept, rerun the command to resume", file=sys.stderr)
        return 143
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
